// The outlier front end: the largest-magnitude weights of a layer sent as a
// sparse side list (index + float16 value) and the rest quantized to int8 on
// the tighter scale they leave (per tensor or per row). Data-free: a weight is
// an outlier when its magnitude exceeds kOutlierRmsMultiple times the RMS of
// its tensor (per-tensor scales) or of its row (per-channel scales), at most
// kMaxOutlierFraction of the weights (the largest relative to that RMS).
//
// What a client gets (docs/FORMAT.md): the int8 picture holds 0 where an
// outlier was (cheap to code: no spike for HEVC to spread over its neighbours);
// the float output puts each outlier back exactly as its float16 value; the
// int8 output stays a plain int8 model: an outlier is saturated to
// clamp(round(w / scale), -127, 127) on its row's scale (±127: it is larger
// than every other weight of its scale group).
//
// The side list on the wire: one zstd frame of `count` little-endian uint32
// index gaps (index - previous index - 1; the first is the index itself), then
// `count` little-endian float16 values. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_OUTLIERS_H_
#define WEIGHTCAST_COMMON_PACK_OUTLIERS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"

namespace weightcast {

// A Gaussian layer of a billion weights has none beyond 6.1 σ on average; a
// Student-t (3 degrees of freedom) layer has ~0.2 % of its weights beyond 6
// RMS.
inline constexpr double kOutlierRmsMultiple = 6.0;
inline constexpr double kMaxOutlierFraction = 0.01;
// A reader accepts at most this fraction of a layer's weights as outliers
// (1/64, above what the encoder sends), and no more than elements.
inline constexpr int64_t kMaxOutlierDivisor = 64;

struct OutlierList {
  std::vector<int64_t> indices;  // strictly increasing, < elements
  std::vector<uint16_t> values;  // float16 bits, finite; same count

  bool empty() const { return indices.empty(); }
};

// The outliers of `values` (row-major, `shape`) by the rule above; the RMS per
// row when `per_row` (and the tensor has >= 2 dimensions). A weight whose
// float16 is not finite (|w| > 65504) is never an outlier.
OutlierList FindOutliers(absl::Span<const int64_t> shape,
                         absl::Span<const float> values, bool per_row);

// FindOutliers(shape, the tensor's values, per_row), the same list, from the
// tensor's `rows` x `cols` (quantize.h's rows) read `chunk_rows` at a time: one
// pass for the RMS, one for the candidates. Memory: one chunk and at most
// kMaxOutlierFraction of the weights as candidates. Errors: the reader's, or
// INVALID_ARGUMENT naming `name` for a chunk of the wrong size.
absl::StatusOr<OutlierList> FindOutliersFromRows(absl::string_view name,
                                                 int64_t rows, int64_t cols,
                                                 const FloatRowReader& read,
                                                 int64_t chunk_rows,
                                                 bool per_row);

// Sets the outliers among elements [first, first + values.size()) to 0.
void ZeroOutliers(const OutlierList& outliers, int64_t first,
                  absl::Span<float> values);

// `read` with the outliers read as 0 (`cols` values per row): the values
// QuantizeWithoutOutliers quantizes, a part at a time. `outliers` must outlive
// the reader.
FloatRowReader WithoutOutliers(FloatRowReader read, int64_t cols,
                               const OutlierList& outliers);

// Each outlier's float16 value as a float, in list order.
std::vector<float> OutlierFloats(const OutlierList& outliers);

// Quantizes `values` with the outliers taken out (0 in their place, so they
// neither set a scale nor cost a spike in the picture). Errors as Quantize's.
absl::StatusOr<QuantizedTensor> QuantizeWithoutOutliers(
    absl::string_view name, absl::Span<const int64_t> shape,
    absl::Span<const float> values, QuantScheme scheme,
    const OutlierList& outliers);

// Writes each outlier's saturated int8 value (clamp(round(w / scale) +
// zero_point, -127, 127)) into `values`: the int8 output.
void SaturateOutliers(const QuantizedTensor& params,
                      const OutlierList& outliers, absl::Span<int8_t> values);
// The same for elements [first, first + values.size()) of a layer of
// `elements` values (a band of its rows, decoded a band at a time).
void SaturateOutliers(const QuantizedTensor& params,
                      const OutlierList& outliers, int64_t elements,
                      int64_t first, absl::Span<int8_t> values);

// Fidelity of `decoded` (coded in `coded_bytes`, side list included) with the
// outliers restored, against `original` and against `quantized` (the int8
// values before coding) with the outliers restored too.
Fidelity MeasureFidelityWithOutliers(absl::Span<const float> original,
                                     const QuantizedTensor& quantized,
                                     absl::Span<const int8_t> decoded,
                                     const OutlierList& outliers,
                                     uint64_t coded_bytes);

// The side list's wire form (a zstd frame, format above).
std::vector<uint8_t> SerializeOutliers(const OutlierList& outliers);

// Parses a side list of `count` outliers for a layer of `elements` weights:
// INVALID_ARGUMENT unless 1 <= count <= elements / kMaxOutlierDivisor + 1 and
// count <= elements, the frame holds exactly count * 6 bytes, every index is
// below `elements` and increasing, and every value is finite.
absl::StatusOr<OutlierList> ParseOutliers(absl::Span<const uint8_t> frame,
                                          uint64_t count, int64_t elements);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_OUTLIERS_H_
