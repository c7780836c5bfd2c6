// A LayerEncoder for tests: HEVC layers are well-formed packed layers (the
// grid, scales and QP the options ask for) whose tile bytes are a deterministic
// function of the tensor, the QP and the tensor's values, of a size a test
// chooses, made in microseconds without x265. Other codecs (zstd, float32,
// passthrough) are the real ones: they need no x265. Deltas are a quarter of
// the layer coded on its own, or none. Counts its calls; can hold every call at
// a gate. Thread-safe. Header-only; for tests only.
#ifndef WEIGHTCAST_SERVER_CORE_FAKE_LAYER_ENCODER_H_
#define WEIGHTCAST_SERVER_CORE_FAKE_LAYER_ENCODER_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/base/sha256.h"
#include "server/core/layer_encoder.h"

namespace weightcast {

class FakeLayerEncoder final : public LayerEncoder {
 public:
  struct Options {
    // Payload bytes of an HEVC layer of `elements` values at `qp` (lossless: qp
    // 0). The default falls with the QP, as x265's does, so budget tiers have
    // curves to allocate over.
    std::function<uint64_t(int64_t elements, int qp)> payload_bytes =
        [](int64_t elements, int qp) {
          return static_cast<uint64_t>(elements) *
                 static_cast<uint64_t>(60 - qp) / 64;
        };
    bool deltas = true;  // EncodeDelta returns a delta; false: nullopt (coding
                         // on its own wins)
    // When set, every call waits for it first.
    absl::Notification* gate = nullptr;
  };

  FakeLayerEncoder() : FakeLayerEncoder(Options()) {}
  explicit FakeLayerEncoder(Options options) : options_(std::move(options)) {}

  absl::StatusOr<PackedLayer> Encode(
      const Tensor& tensor, const LayerEncodeOptions& options) const override {
    if (options_.gate) options_.gate->WaitForNotification();
    encodes_.fetch_add(1);
    if (options.codec != LayerCodec::kHevc) return EncodeLayer(tensor, options);
    hevc_encodes_.fetch_add(1);
    const int qp = options.hevc.lossless ? 0 : options.hevc.qp;
    PackedLayer layer =
        Shell(tensor, options.scheme,
              PlanTiles(MatrixView(tensor.shape).first,
                        MatrixView(tensor.shape).second, options.max_tile_size,
                        options.max_tile_pixels));
    layer.codec = LayerCodec::kHevc;
    layer.qp = qp;
    layer.lossless = options.hevc.lossless;
    layer.preset = options.hevc.preset;
    const std::string seed = absl::StrCat("intra/", tensor.name, "/", qp, "/",
                                          DigestToHex(Digest(tensor.data)));
    Fill(seed, options_.payload_bytes(tensor.NumElements(), qp), &layer);
    layer.fidelity.sqnr_db = options.hevc.lossless ? 99.0 : 60.0 - qp;
    return layer;
  }

  absl::StatusOr<std::optional<PackedLayer>> EncodeDelta(
      const PackedLayer& base, const Tensor& base_source, const Tensor& target,
      double intra_sqnr_db, uint64_t max_bytes,
      int first_offset) const override {
    if (options_.gate) options_.gate->WaitForNotification();
    deltas_tried_.fetch_add(1);
    if (!options_.deltas) return std::nullopt;
    PackedLayer delta = Shell(target, base.scheme, base.grid);
    delta.codec = LayerCodec::kHevcDelta;
    delta.qp = base.qp + first_offset;
    delta.preset = base.preset;
    delta.base_sha256 = Sha256(SerializePackedLayer(base));
    const std::string seed =
        absl::StrCat("delta/", target.name, "/", delta.qp, "/",
                     DigestToHex(Digest(target.data)), "/",
                     DigestToHex(Digest(base_source.data)));
    Fill(seed, max_bytes / 4, &delta);
    delta.fidelity.sqnr_db = intra_sqnr_db;
    return std::optional<PackedLayer>(std::move(delta));
  }

  int64_t encodes() const { return encodes_.load(); }  // every Encode call
  int64_t hevc_encodes() const { return hevc_encodes_.load(); }
  int64_t deltas_tried() const { return deltas_tried_.load(); }

 private:
  static Sha256Digest Digest(const std::vector<uint8_t>& bytes) {
    return Sha256(bytes);
  }

  // A layer of `tensor` without its payload: shape, one scale per channel the
  // scheme needs.
  static PackedLayer Shell(const Tensor& tensor, QuantScheme scheme,
                           const TileGrid& grid) {
    PackedLayer layer;
    layer.name = tensor.name;
    layer.shape = tensor.shape;
    layer.source_dtype = tensor.dtype;
    layer.scheme = scheme;
    const bool per_channel = scheme == QuantScheme::kPerChannelSymmetric ||
                             scheme == QuantScheme::kPerChannelAsymmetric;
    const size_t channels = per_channel && tensor.shape.size() >= 2
                                ? static_cast<size_t>(tensor.shape[0])
                                : 1;
    layer.scales.assign(channels, 1.0f);
    layer.zero_points.assign(channels, 0);
    layer.grid = grid;
    return layer;
  }

  // `bytes` of payload over the grid's tiles (each at least one byte), drawn
  // from `seed`; the decoded SHA-256 is the seed's, so equal inputs decode
  // alike and others do not.
  static void Fill(const std::string& seed, uint64_t bytes,
                   PackedLayer* layer) {
    const int64_t tiles = std::max<int64_t>(1, layer->grid.NumTiles());
    bytes = std::max<uint64_t>(bytes, static_cast<uint64_t>(tiles));
    layer->tiles.assign(tiles, {});
    Sha256Digest block = Sha256(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(seed.data()), seed.size()));
    layer->decoded_sha256 = block;
    for (uint64_t i = 0; i < bytes; ++i) {
      if (i % block.size() == 0) block = Sha256(block);
      layer->tiles[i % tiles].push_back(block[i % block.size()]);
    }
    layer->fidelity.bits_per_weight =
        8.0 * static_cast<double>(bytes) /
        std::max<int64_t>(1, NumElements(layer->shape));
  }
  static int64_t NumElements(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }

  const Options options_;
  mutable std::atomic<int64_t> encodes_{0};
  mutable std::atomic<int64_t> hevc_encodes_{0};
  mutable std::atomic<int64_t> deltas_tried_{0};
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_FAKE_LAYER_ENCODER_H_
