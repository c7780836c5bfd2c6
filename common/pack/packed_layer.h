// The packed-layer format (docs/FORMAT.md): one tensor of one tier,
// self-describing and self-delimiting. "WCL1", a little-endian uint32 header
// length, a PackedLayerHeader protobuf, then the payload (the concatenated tile
// bitstreams). The reader treats bytes as untrusted and rejects a header whose
// sizes do not add up before allocating anything. Plain values; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_PACKED_LAYER_H_
#define WEIGHTCAST_COMMON_PACK_PACKED_LAYER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/base/sha256.h"
#include "common/hevc/picture.h"
#include "common/pack/layer_codec_id.h"
#include "common/pack/mosaic.h"
#include "common/pack/outliers.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {

absl::string_view LayerCodecName(
    LayerCodec codec);  // "hevc", "raw-int8", "zstd-int8", ...
bool IsInt8Codec(LayerCodec codec);
// HEVC pictures (intra, or P pictures on a base layer: kHevcDelta), cut by a
// TileGrid.
bool IsPictureCodec(LayerCodec codec);
// The codec's number in weightcast.v1.LayerCodec (packed_layer.proto), for APIs
// that carry it.
int LayerCodecProtoNumber(LayerCodec codec);
// The weightcast.v1.QuantScheme number of a scheme (the one mapping; the API
// reuses it).
int QuantSchemeProtoNumber(QuantScheme scheme);

// Limits a reader enforces before allocating.
inline constexpr uint32_t kMaxHeaderBytes = 16 << 20;
inline constexpr int64_t kMaxLayerElements = int64_t{1} << 31;
inline constexpr int kMaxTensorRank = 8;
inline constexpr int kMaxX265Tools = 16;
inline constexpr size_t kMaxX265ToolBytes = 64;

struct PackedLayer {
  std::string name;
  LayerCodec codec = LayerCodec::kRawInt8;
  std::vector<int64_t> shape;
  DType source_dtype = DType::kFloat32;
  // int8 codecs only.
  QuantScheme scheme = QuantScheme::kPerTensorSymmetric;
  std::vector<float> scales;
  std::vector<int32_t> zero_points;
  // int8 codecs but kHevcDelta, optional: the outlier front end's side list
  // (outliers.h); a layer with one is format version 2.
  OutlierList outliers;
  // int8 codecs but kHevcDelta, optional: activation-aware column weighting
  // (layer_codec.h's LayerEncodeOptions::column_scales). The int8 values and
  // outliers code w[r][c] * column_scales[c / column_scale_repeat] of the
  // matrix view; the float output divides again. Each a positive float16
  // value; a layer with them is format version 3.
  std::vector<float> column_scales;
  int64_t column_scale_repeat = 1;
  // HEVC only, optional: the mosaic layout (mosaic.h); a layer with one is
  // format version 4, and its grid cuts the mosaic's picture.
  Mosaic mosaic;
  // HEVC only: how the matrix view (or its mosaic) is cut; other codecs have
  // exactly one tile.
  TileGrid grid;
  std::vector<std::vector<uint8_t>> tiles;  // one bitstream / payload per tile
  Sha256Digest decoded_sha256{};
  // Measured when coding; not written to the header (the server's registry and
  // the pack summary hold it; a parsed layer's is zero unless
  // fidelity_in_header).
  Fidelity fidelity;
  // Set by the reader for a layer whose header carries sqnr_db, sqnr_int8_db or
  // max_abs_error (writers before December 2026 wrote them): serializing it
  // writes them again, so the bytes, and the SHA-256 a delta names its base by,
  // stay the ones stored.
  bool fidelity_in_header = false;
  int qp = 0;
  bool lossless = false;
  std::string preset;
  std::vector<std::string> tools;  // HevcEncodeOptions::tools
  // kHevcDelta only: the SHA-256 of the serialized base layer its P pictures
  // are predicted from.
  Sha256Digest base_sha256{};

  uint64_t PayloadBytes() const;
};

std::vector<uint8_t> SerializePackedLayer(const PackedLayer& layer);

// Parses one packed layer at the start of `bytes`; sets *consumed to its length
// so that layers can be read back to back. INVALID_ARGUMENT (naming the layer
// when the name is known) for any header that is malformed or whose sizes do
// not add up.
absl::StatusOr<PackedLayer> ParsePackedLayer(absl::Span<const uint8_t> bytes,
                                             size_t* consumed);

// Where a packed layer's tiles lie in its bytes: tile i is [starts[i],
// TileEnd(i)), and the layer ends at `end`.
struct TileOffsets {
  std::vector<uint64_t> starts;
  uint64_t end = 0;

  uint64_t TileEnd(size_t tile) const {
    return tile + 1 < starts.size() ? starts[tile + 1] : end;
  }
};

// The header of a packed layer still arriving: `prefix` holds its first bytes
// of `total` (a layer's length, known from its manifest entry). The layer with
// its tiles sized and empty, and where its tiles lie (its end at most
// `total`). UNAVAILABLE while the prefix ends inside the header; otherwise
// ParsePackedLayer's errors for the header.
struct PackedLayerHead {
  PackedLayer layer;
  TileOffsets offsets;
};
absl::StatusOr<PackedLayerHead> ParsePackedLayerHead(
    absl::Span<const uint8_t> prefix, uint64_t total);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_PACKED_LAYER_H_
