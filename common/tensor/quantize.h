// Post-training int8 quantization: per-tensor symmetric (the default, `scale =
// max|w| / 127`), per-channel symmetric, and the asymmetric variants the seed
// research compared against. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_TENSOR_QUANTIZE_H_
#define WEIGHTCAST_COMMON_TENSOR_QUANTIZE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/tensor.h"

namespace weightcast {

enum class QuantScheme {
  kPerTensorSymmetric,
  kPerChannelSymmetric,  // one scale per index of dimension 0 (output channel)
  kPerTensorAsymmetric,
  kPerChannelAsymmetric,
};

absl::string_view QuantSchemeName(
    QuantScheme scheme);  // "per-tensor-symmetric", ...
absl::StatusOr<QuantScheme> QuantSchemeFromName(absl::string_view name);

// How many scales (and zero points) a tensor of `shape` has under `scheme`:
// one per index of dimension 0 for per-channel schemes on a tensor of two or
// more dimensions, else one.
int64_t ScaleCount(QuantScheme scheme, absl::Span<const int64_t> shape);
// Whether every zero point of `scheme` is 0.
bool IsSymmetric(QuantScheme scheme);

// int8 values with the parameters that map them back: w ≈ scale[c] * (q -
// zero_point[c]).
struct QuantizedTensor {
  std::vector<int64_t> shape;
  QuantScheme scheme = QuantScheme::kPerTensorSymmetric;
  std::vector<int8_t> values;
  std::vector<float> scales;  // 1 entry per tensor or 1 per channel
  std::vector<int32_t>
      zero_points;  // same count as scales; all 0 when symmetric

  // Elements that share one scale (all of them for per-tensor schemes).
  int64_t ElementsPerScale() const;
};

// Quantizes `values` (row-major, `shape`). NaN or Inf is an InvalidArgument
// naming `name`. An all-zero tensor (or channel) gets scale 1 and quantizes to
// zeros.
absl::StatusOr<QuantizedTensor> Quantize(absl::string_view name,
                                         absl::Span<const int64_t> shape,
                                         absl::Span<const float> values,
                                         QuantScheme scheme);

// Rows `first_row` .. `first_row + rows - 1` of a tensor's matrix (dimension 0
// by the product of the others; a tensor of fewer than two dimensions is one
// row) as float32, row-major: a tensor read a part at a time.
using FloatRowReader = std::function<absl::StatusOr<std::vector<float>>(
    int64_t first_row, int64_t rows)>;

// Rows [first_row, first_row + rows) of `read` (`cols` values each) in chunks
// of `chunk_rows`, in order: fn(first row of the chunk, its values).
// INVALID_ARGUMENT naming `name` for a chunk of the wrong size; the reader's
// errors.
absl::Status ForEachRowChunk(
    const FloatRowReader& read, int64_t first_row, int64_t rows, int64_t cols,
    int64_t chunk_rows, absl::string_view name,
    const std::function<void(int64_t, absl::Span<const float>)>& fn);

// The scales and zero points Quantize(name, shape, the tensor's values, scheme)
// would choose, bit for bit, from the tensor's rows read `chunk_rows` at a time
// (values left empty): memory follows one chunk. Errors as Quantize's, or the
// reader's.
absl::StatusOr<QuantizedTensor> QuantizeParamsFromRows(
    absl::string_view name, absl::Span<const int64_t> shape,
    const FloatRowReader& read, QuantScheme scheme, int64_t chunk_rows);

// Quantize's int8 values for the columns [col0, col0 + out_cols) of whole
// rows `first_row`.. of the tensor (`values`: those rows, `cols` each), with
// the scales and zero points of `params` (QuantizeParamsFromRows'), written to
// `out` row by row (`out_cols` each).
void QuantizeRowsWith(const QuantizedTensor& params, int64_t first_row,
                      int64_t cols, absl::Span<const float> values,
                      int64_t col0, int64_t out_cols, int8_t* out);

// Quantizes `values` with the scales and zero points of `like` (same shape), as
// a later version of a tensor is quantized so that an unchanged weight keeps
// its int8 value. A value up to kQuantizeLikeSlack steps beyond the range is
// clamped to it (fine-tuning often nudges the largest weight a little);
// FAILED_PRECONDITION naming `name` for one further out.
inline constexpr float kQuantizeLikeSlack = 2.0f;
absl::StatusOr<QuantizedTensor> QuantizeLike(absl::string_view name,
                                             absl::Span<const float> values,
                                             const QuantizedTensor& like);
// QuantizeLike for elements [first, first + values.size()) of the tensor (a
// band of its rows), written to `out` (values.size()); `like`'s values are not
// used. The same errors, naming the element by its index in the tensor.
absl::Status QuantizeRangeLike(absl::string_view name,
                               const QuantizedTensor& like, int64_t first,
                               absl::Span<const float> values, int8_t* out);

// A FloatRowReader over a matrix of `cols` columns held in memory (`values`,
// which must outlive it).
FloatRowReader RowsOfValues(absl::Span<const float> values, int64_t cols);

// w = scale * (q - zero_point) for `values`, using the parameters of `params`
// (`values` may be a lossy reconstruction of params.values; same length).
std::vector<float> Dequantize(const QuantizedTensor& params,
                              absl::Span<const int8_t> values);

// Dequantize for elements [first, first + values.size()) of a tensor of
// `elements` values (a band or slice of it), into `out` (values.size()): scale
// c covers elements [c * group, (c + 1) * group), group = elements / scales;
// an element past the last group is 0. Each of `outlier_indices` (increasing)
// in the range then takes its `outlier_values` entry: the outlier front end's
// float values over the saturated int8 (common/pack/outliers.h).
void DequantizeRange(const QuantizedTensor& params, int64_t elements,
                     int64_t first, absl::Span<const int8_t> values,
                     absl::Span<const int64_t> outlier_indices,
                     absl::Span<const float> outlier_values,
                     absl::Span<float> out);
inline std::vector<float> Dequantize(const QuantizedTensor& tensor) {
  return Dequantize(tensor, tensor.values);
}

// Activation-aware column weighting (common/pack/packed_layer.h's
// column_scales): the values of a row-major matrix of `cols` columns whose
// column c was coded multiplied by scales[c / repeat]. None when `scales` is
// empty.
struct ColumnScales {
  std::vector<float> scales;
  int64_t repeat = 1;
  int64_t cols = 0;

  bool empty() const { return scales.empty(); }
  float of(int64_t col) const { return scales[col / repeat]; }
};
// Divides `values`, elements [first, first + values.size()) of the matrix,
// by their columns' scales (nothing when `columns` is empty).
void UnscaleColumns(const ColumnScales& columns, int64_t first,
                    absl::Span<float> values);

// One tensor of a rebuilt model: int8 values with their scales where it was
// coded as int8, otherwise the tensor as stored (float32/float16, or an integer
// buffer).
struct RebuiltTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::optional<QuantizedTensor> int8;
  Tensor stored;
  // int8 layers of the outlier front end (common/pack/outliers.h): the
  // outliers' flat indices (increasing) and values, which the float output
  // takes instead of the dequantized int8 (where int8 holds them saturated).
  std::vector<int64_t> outlier_indices;
  std::vector<float> outlier_values;
  // int8 layers coded with column weights: the float output divides by them.
  ColumnScales columns;

  // The tensor a float model is rebuilt from: dequantized int8 (with the
  // outliers put back), or the stored
  // tensor with float16/bfloat16 widened to float32 (integer buffers
  // unchanged).
  absl::StatusOr<Tensor> ToFloatTensor() const;
  // What an int8 output holds for an int8 layer: `int8` itself, or for a
  // layer with column scales (whose int8 values code scaled columns, which no
  // int8 runtime would undo) its float output quantized again with
  // per-channel symmetric scales.
  absl::StatusOr<QuantizedTensor> Int8Output() const;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_QUANTIZE_H_
