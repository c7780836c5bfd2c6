// What the ModelStore calls to code one layer of a tier: a tensor on its own
// (the intra coding; also each point of a budget tier's rate curve), and a
// tensor as P pictures on a base layer (a version delta or a refinement).
// X265LayerEncoder() is the real coding (common/pack, x265); tests give
// ModelStoreOptions::layer_encoder a fake that makes deterministic bytes
// quickly. Thread-safe: the encoder pool's workers call one instance
// concurrently.
#ifndef WEIGHTCAST_SERVER_CORE_LAYER_ENCODER_H_
#define WEIGHTCAST_SERVER_CORE_LAYER_ENCODER_H_

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/tensor.h"

namespace weightcast {

// The largest tensor a layer policy's "auto" mosaic is looked for in (64 MiB
// of float32): a mosaic is coded from the whole tensor, larger tensors a chunk
// of rows at a time as their matrix.
inline constexpr int64_t kMaxFindMosaicElements = int64_t{1} << 24;

class LayerEncoder {
 public:
  virtual ~LayerEncoder() = default;

  // `tensor` coded with `options`, as common/pack/layer_codec.h's EncodeLayer.
  virtual absl::StatusOr<PackedLayer> Encode(
      const Tensor& tensor, const LayerEncodeOptions& options) const = 0;

  // One tensor of a stored checkpoint: its header (data empty), the whole
  // tensor when asked for, and its rows as float32 a chunk at a time.
  struct Source {
    const Tensor& header;
    std::function<absl::StatusOr<Tensor>()> read;
    FloatRowReader rows;
  };
  // The same bytes as Encode(source.read(), options). The default reads the
  // whole tensor; the real coding reads a floating-point tensor coded as int8
  // a chunk of rows at a time (EncodeLayerFromRows), never holding it whole,
  // unless it has column scales (coded from the whole tensor).
  virtual absl::StatusOr<PackedLayer> EncodeSource(
      const Source& source, const LayerEncodeOptions& options) const;

  // `target` coded on `base` (coded from `base_source`), as
  // common/pack/delta_codec.h's EncodeMatchedLayerDelta on one thread: nullopt
  // when no delta of at least `intra_sqnr_db` is smaller than `max_bytes`.
  virtual absl::StatusOr<std::optional<PackedLayer>> EncodeDelta(
      const PackedLayer& base, const Tensor& base_source, const Tensor& target,
      double intra_sqnr_db, uint64_t max_bytes, int first_offset) const = 0;
  // The same from stored tensors. The default reads both whole; the real
  // coding reads them a chunk of rows at a time
  // (EncodeMatchedLayerDeltaFromRows), never holding either whole.
  virtual absl::StatusOr<std::optional<PackedLayer>> EncodeDeltaSource(
      const PackedLayer& base, const Source& base_source, const Source& target,
      double intra_sqnr_db, uint64_t max_bytes, int first_offset) const;
};

// The real coding: EncodeLayer and EncodeMatchedLayerDelta. One instance for
// the process, never destroyed.
const LayerEncoder& X265LayerEncoder();

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_LAYER_ENCODER_H_
