// Packs one tensor into a PackedLayer with a given codec, and decodes one back.
// Encoding quantizes, codes every tile (in parallel), then decodes what it
// coded once to record the exact SHA-256 and fidelity a client will see; with
// `choose_scheme` the quantization front end is chosen first (front_end.h).
// Stateless; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_
#define WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/parallel_for.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {

struct LayerEncodeOptions {
  LayerCodec codec = LayerCodec::kHevc;
  QuantScheme scheme = QuantScheme::kPerTensorSymmetric;
  // int8 codecs: per-tensor or per-channel symmetric scales, whichever
  // front_end.h's rule picks
  // (`scheme` is then ignored).
  bool choose_scheme = false;
  // int8 codecs but kHevcDelta: the outlier front end (outliers.h) on
  // `scheme`: set by the choice when `choose_scheme`, else as given. A layer
  // without outliers by outliers.h's rule is coded without a side list.
  bool outliers = false;
  // int8 codecs but kHevcDelta, optional: activation-aware column weighting
  // (issue 21). Column c of the matrix view is coded multiplied by
  // column_scales[c / column_scale_repeat] (each rounded to float16; the
  // count times the repeat must be the matrix's columns), so that columns
  // whose inputs are large get a finer step than those whose inputs are
  // small; the float output divides again (packed_layer.h). EncodeLayer
  // only (EncodeLayerFromRows refuses them).
  std::vector<float> column_scales;
  int64_t column_scale_repeat = 1;
  // kHevc only, optional: the picture is the matrix view's mosaic (mosaic.h:
  // blocks of these sides, their size dividing the matrix's columns).
  // EncodeLayer only (EncodeLayerFromRows refuses it).
  Mosaic mosaic;
  // kHevc only: with no `mosaic`, EncodeLayer codes the one FindMosaic sees
  // in a floating-point tensor's values, if any (a layer policy's "auto").
  bool find_mosaic = false;
  HevcEncodeOptions hevc;  // HEVC only
  int max_tile_size = kDefaultMaxTileSize;
  int64_t max_tile_pixels = kDefaultMaxTilePixels;  // picture.h's PlanTiles
  int threads = 0;  // tiles coded at once; 0 = one per core
  // Optional: tiles are coded (and decoded once to check them) on the calling
  // thread plus up to `tile_helpers` tasks handed to `tile_spawner` (a server's
  // worker pool; SharedParallelFor), instead of on `threads` threads of our
  // own. The bytes are the same either way.
  TaskSpawner tile_spawner;
  int tile_helpers = 0;
  // Optional: asked before each tile is coded or checked; once it returns
  // true the layer's remaining tiles are skipped and the encode returns
  // CANCELLED (a server stopping: a layer's wait is one tile, not the layer).
  std::function<bool()> cancelled;
};

absl::StatusOr<PackedLayer> EncodeLayer(const Tensor& tensor,
                                        const LayerEncodeOptions& options);

// The int8 values of `rect` of a matrix of `cols` columns whose rows `read`
// gives (a chunk of `chunk_rows` at a time), quantized with `params` (`like`:
// as QuantizeLike, FAILED_PRECONDITION naming `name` for a value beyond
// `params`' range).
absl::StatusOr<std::vector<int8_t>> QuantizeRect(
    const QuantizedTensor& params, const FloatRowReader& read,
    const TileRect& rect, int64_t cols, int64_t chunk_rows,
    absl::string_view name, bool like = false);

// EncodeLayer(tensor, options), byte for byte, for a floating-point tensor and
// an int8 codec (HEVC, zstd or raw int8), from the tensor's header (name,
// shape, dtype; data unused) and its rows read about `chunk_elements` at a time
// (a few passes: the ranges, the front end's candidates, the outliers, the
// fidelity): memory follows the int8 values of the tiles in progress and their
// decoded copy plus one chunk (and, for the outlier front end, at most
// kMaxOutlierFraction of the weights as candidates), never a float copy of the
// whole tensor.
// INVALID_ARGUMENT for other codecs or dtypes, or an empty tensor.
inline constexpr int64_t kRowChunkElements = 4 << 20;
absl::StatusOr<PackedLayer> EncodeLayerFromRows(
    const Tensor& header, const FloatRowReader& read,
    const LayerEncodeOptions& options,
    int64_t chunk_elements = kRowChunkElements);

// Decodes all tiles (in parallel) and checks the SHA-256 recorded in the
// header. DATA_LOSS naming the layer when a bitstream is damaged or the digest
// does not match.
absl::StatusOr<RebuiltTensor> DecodeLayer(const PackedLayer& layer,
                                          int threads = 0);
// DecodeLayer's last check: DATA_LOSS naming the layer and both digests when
// `digest` (of the decoded data) is not the one recorded.
absl::Status CheckDecodedDigest(const PackedLayer& layer,
                                const Sha256Digest& digest);

// Column scales from the RMS of each input feature of a layer
// (Evaluator::InputRms): (rms / mean rms)^alpha, within [1/16, 16]; all 1
// when every input is zero. High-rate theory says alpha 1 equalizes the
// output error; the Fashion-MNIST measurement (docs/BENCHMARKS.md, column
// weighting) found 0.25 best of 0.25, 0.5 and 1 under HEVC.
inline constexpr double kColumnScaleAlpha = 0.25;
std::vector<float> ColumnScalesFromInputRms(absl::Span<const float> rms,
                                            double alpha = kColumnScaleAlpha);
// Input RMS figures by weight name (Evaluator::InputRms).
using InputRmsMap = std::map<std::string, std::vector<float>>;
// Sets `options`' column scales from `input_rms` when it names `tensor` (only
// its header is read), the coding is lossy HEVC of a floating-point tensor and
// its columns are a whole number of figures each (a convolution's input
// channel repeated over its kernel); otherwise leaves them empty. A lossless
// tier keeps its exact int8 values.
void WeighColumns(const Tensor& tensor, const InputRmsMap& input_rms,
                  LayerEncodeOptions* options);

// The outlier front end's last decoding step (outliers.h), on int8 values
// whose SHA-256 has been checked: each outlier saturated into `out->int8`, and
// its float16 value in `out->outlier_*` for the float output. OK and nothing
// done for a layer without outliers; DATA_LOSS when the list does not fit.
absl::Status AttachOutliers(const PackedLayer& layer, RebuiltTensor* out);
// A layer's column scales as its float output divides by them (none when it
// has none); DATA_LOSS naming the layer when they do not cover its matrix's
// columns.
absl::StatusOr<ColumnScales> ColumnScalesOf(const PackedLayer& layer);
// The tensor of an int8 layer whose decoded `values` have been checked: its
// scales, its outliers attached (AttachOutliers) and its column scales
// (DecodeLayer's and FinishTiledDecode's last step).
absl::StatusOr<RebuiltTensor> RebuiltFromInt8(const PackedLayer& layer,
                                              std::vector<int8_t> values);
// AttachOutliers' check alone, for a layer of `elements` values taken a band
// of rows at a time (client/sdk/layer_output.h).
absl::Status CheckOutliersFit(const PackedLayer& layer, int64_t elements);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_
