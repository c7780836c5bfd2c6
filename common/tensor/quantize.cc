#include "common/tensor/quantize.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/tensor/tensor.h"

namespace weightcast {
namespace {

constexpr std::pair<QuantScheme, absl::string_view> kSchemeNames[] = {
    {QuantScheme::kPerTensorSymmetric, "per-tensor-symmetric"},
    {QuantScheme::kPerChannelSymmetric, "per-channel-symmetric"},
    {QuantScheme::kPerTensorAsymmetric, "per-tensor-asymmetric"},
    {QuantScheme::kPerChannelAsymmetric, "per-channel-asymmetric"},
};

bool IsPerChannel(QuantScheme scheme) {
  return scheme == QuantScheme::kPerChannelSymmetric ||
         scheme == QuantScheme::kPerChannelAsymmetric;
}

int8_t Clamp8(float x, int lo) {
  return static_cast<int8_t>(
      std::clamp(static_cast<int>(std::lrint(x)), lo, 127));
}

// The range of one group of values that share a scale; it always holds 0 so
// that 0.0 stays exact.
struct GroupRange {
  float lo = 0.0f, hi = 0.0f;
  void Add(absl::Span<const float> in) {
    for (float w : in) {
      lo = std::min(lo, w);
      hi = std::max(hi, w);
    }
  }
};

void ParamsOf(const GroupRange& range, bool symmetric, float* scale,
              int32_t* zero_point) {
  if (symmetric) {
    const float max_abs = std::max(-range.lo, range.hi);
    *scale = max_abs > 0 ? max_abs / 127.0f : 1.0f;
    *zero_point = 0;
    return;
  }
  *scale = range.hi > range.lo ? (range.hi - range.lo) / 255.0f : 1.0f;
  *zero_point = std::clamp(
      static_cast<int32_t>(std::lrint(-128.0f - range.lo / *scale)), -128, 127);
}

void QuantizeWith(absl::Span<const float> in, bool symmetric, float scale,
                  int32_t zero_point, int8_t* out) {
  if (symmetric) {
    for (size_t i = 0; i < in.size(); ++i) out[i] = Clamp8(in[i] / scale, -127);
    return;
  }
  for (size_t i = 0; i < in.size(); ++i) {
    out[i] = Clamp8(in[i] / scale + static_cast<float>(zero_point), -128);
  }
}

// Quantizes one group of values that share a scale.
void QuantizeGroup(absl::Span<const float> in, bool symmetric, int8_t* out,
                   float* scale, int32_t* zero_point) {
  GroupRange range;
  range.Add(in);
  ParamsOf(range, symmetric, scale, zero_point);
  QuantizeWith(in, symmetric, *scale, *zero_point, out);
}

absl::Status CheckAllFinite(absl::string_view name,
                            absl::Span<const float> values, int64_t first) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "': element ", first + static_cast<int64_t>(i),
          " is ", values[i], " (weights must be finite)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsSymmetric(QuantScheme scheme) {
  return scheme == QuantScheme::kPerTensorSymmetric ||
         scheme == QuantScheme::kPerChannelSymmetric;
}

int64_t ScaleCount(QuantScheme scheme, absl::Span<const int64_t> shape) {
  return IsPerChannel(scheme) && shape.size() >= 2 && shape[0] > 0 ? shape[0]
                                                                   : 1;
}

absl::string_view QuantSchemeName(QuantScheme scheme) {
  for (const auto& [s, name] : kSchemeNames) {
    if (s == scheme) return name;
  }
  return "unknown";
}

absl::StatusOr<QuantScheme> QuantSchemeFromName(absl::string_view name) {
  for (const auto& [scheme, n] : kSchemeNames) {
    if (n == name) return scheme;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown quantization scheme '", name, "'"));
}

int64_t QuantizedTensor::ElementsPerScale() const {
  if (scales.empty()) return 0;
  return static_cast<int64_t>(values.size()) /
         static_cast<int64_t>(scales.size());
}

absl::StatusOr<QuantizedTensor> Quantize(absl::string_view name,
                                         absl::Span<const int64_t> shape,
                                         absl::Span<const float> values,
                                         QuantScheme scheme) {
  QuantizedTensor out;
  out.shape.assign(shape.begin(), shape.end());
  out.scheme = scheme;
  ASSIGN_OR_RETURN(
      const int64_t count,
      CheckedNumElements(shape, absl::StrCat("tensor '", name, "'")));
  if (count != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': ", values.size(),
                     " values for shape ", ShapeToString(shape)));
  }
  RETURN_IF_ERROR(CheckAllFinite(name, values, 0));
  const size_t channels = static_cast<size_t>(ScaleCount(scheme, shape));
  const size_t per_channel = channels ? values.size() / channels : 0;
  out.values.resize(values.size());
  out.scales.resize(channels);
  out.zero_points.resize(channels);
  for (size_t c = 0; c < channels; ++c) {
    QuantizeGroup(values.subspan(c * per_channel, per_channel),
                  IsSymmetric(scheme), out.values.data() + c * per_channel,
                  &out.scales[c], &out.zero_points[c]);
  }
  return out;
}

absl::Status ForEachRowChunk(
    const FloatRowReader& read, int64_t first_row, int64_t rows, int64_t cols,
    int64_t chunk_rows, absl::string_view name,
    const std::function<void(int64_t, absl::Span<const float>)>& fn) {
  // Bounded: one round per chunk of rows.
  for (int64_t row = first_row; row < first_row + rows; row += chunk_rows) {
    const int64_t n = std::min(chunk_rows, first_row + rows - row);
    ASSIGN_OR_RETURN(const std::vector<float> values, read(row, n));
    if (static_cast<int64_t>(values.size()) != n * cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': ", values.size(),
                       " values read for ", n, " rows of ", cols));
    }
    fn(row, values);
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantizedTensor> QuantizeParamsFromRows(
    absl::string_view name, absl::Span<const int64_t> shape,
    const FloatRowReader& read, QuantScheme scheme, int64_t chunk_rows) {
  QuantizedTensor out;
  out.shape.assign(shape.begin(), shape.end());
  out.scheme = scheme;
  ASSIGN_OR_RETURN(
      const int64_t count,
      CheckedNumElements(shape, absl::StrCat("tensor '", name, "'")));
  const int64_t rows = shape.size() >= 2 ? shape[0] : 1;
  if (count == 0 || rows <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': nothing to quantize in rows"));
  }
  const int64_t cols = count / rows;
  const bool per_channel = IsPerChannel(scheme) && shape.size() >= 2;
  chunk_rows = std::clamp<int64_t>(chunk_rows, 1, rows);
  std::vector<GroupRange> ranges(per_channel ? static_cast<size_t>(rows) : 1);
  // Bounded: one round per chunk of rows.
  for (int64_t row = 0; row < rows; row += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - row);
    ASSIGN_OR_RETURN(const std::vector<float> values, read(row, n));
    if (static_cast<int64_t>(values.size()) != n * cols) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': ", values.size(),
                       " values read for ", n, " rows of ", cols));
    }
    RETURN_IF_ERROR(CheckAllFinite(name, values, row * cols));
    const absl::Span<const float> span(values);
    if (!per_channel) {
      ranges[0].Add(span);
      continue;
    }
    for (int64_t r = 0; r < n; ++r)
      ranges[row + r].Add(span.subspan(r * cols, cols));
  }
  out.scales.resize(ranges.size());
  out.zero_points.resize(ranges.size());
  for (size_t g = 0; g < ranges.size(); ++g) {
    ParamsOf(ranges[g], IsSymmetric(scheme), &out.scales[g],
             &out.zero_points[g]);
  }
  return out;
}

void QuantizeRowsWith(const QuantizedTensor& params, int64_t first_row,
                      int64_t cols, absl::Span<const float> values,
                      int64_t col0, int64_t out_cols, int8_t* out) {
  const bool symmetric = IsSymmetric(params.scheme);
  const bool per_channel = params.scales.size() > 1;  // a scale per row
  const int64_t rows = cols ? static_cast<int64_t>(values.size()) / cols : 0;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t g = per_channel ? static_cast<size_t>(first_row + r) : 0;
    QuantizeWith(values.subspan(r * cols + col0, out_cols), symmetric,
                 params.scales[g], params.zero_points[g], out + r * out_cols);
  }
}

absl::StatusOr<QuantizedTensor> QuantizeLike(absl::string_view name,
                                             absl::Span<const float> values,
                                             const QuantizedTensor& like) {
  if (values.size() != like.values.size() || like.scales.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': ", values.size(),
                     " values, the base has ", like.values.size()));
  }
  QuantizedTensor out = like;
  RETURN_IF_ERROR(QuantizeRangeLike(name, like, 0, values, out.values.data()));
  return out;
}

absl::Status QuantizeRangeLike(absl::string_view name,
                               const QuantizedTensor& like, int64_t first,
                               absl::Span<const float> values, int8_t* out) {
  const int lo = IsSymmetric(like.scheme) ? -127 : -128;
  int64_t elements = 1;
  for (const int64_t d : like.shape) elements *= d;
  const int64_t group =
      std::max<int64_t>(1, elements / static_cast<int64_t>(like.scales.size()));
  for (size_t k = 0; k < values.size(); ++k) {
    const int64_t i = first + static_cast<int64_t>(k);
    const size_t c = static_cast<size_t>(i / group);
    const float q =
        values[k] / like.scales[c] + static_cast<float>(like.zero_points[c]);
    if (!std::isfinite(q) || q < lo - 0.5f - kQuantizeLikeSlack ||
        q > 127.5f + kQuantizeLikeSlack) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", name, "': element ", i, " (", values[k],
                       ") is outside the range of the base's scale"));
    }
    out[k] = Clamp8(q, lo);
  }
  return absl::OkStatus();
}

FloatRowReader RowsOfValues(absl::Span<const float> values, int64_t cols) {
  return [values, cols](int64_t first_row,
                        int64_t rows) -> absl::StatusOr<std::vector<float>> {
    const int64_t begin = first_row * cols, end = (first_row + rows) * cols;
    if (first_row < 0 || rows < 0 ||
        end > static_cast<int64_t>(values.size())) {
      return absl::OutOfRangeError(absl::StrCat("rows ", first_row, "+", rows,
                                                " are outside the matrix"));
    }
    return std::vector<float>(values.begin() + begin, values.begin() + end);
  };
}

std::vector<float> Dequantize(const QuantizedTensor& params,
                              absl::Span<const int8_t> values) {
  assert(values.size() == params.values.size());
  std::vector<float> out(values.size());
  DequantizeRange(params, static_cast<int64_t>(values.size()), 0, values, {},
                  {}, absl::MakeSpan(out));
  return out;
}

void DequantizeRange(const QuantizedTensor& params, int64_t elements,
                     int64_t first, absl::Span<const int8_t> values,
                     absl::Span<const int64_t> outlier_indices,
                     absl::Span<const float> outlier_values,
                     absl::Span<float> out) {
  assert(out.size() == values.size());
  const int64_t groups = static_cast<int64_t>(params.scales.size());
  const int64_t group = groups == 0 ? 0 : elements / groups;
  const int64_t end = first + static_cast<int64_t>(values.size());
  int64_t i = first;
  // Group by group over the range, so the inner loop is one scale's.
  for (int64_t c = group == 0 ? groups : first / group; c < groups && i < end;
       ++c) {
    const int64_t stop = std::min(end, (c + 1) * group);
    const float scale = params.scales[c];
    const int32_t zero = params.zero_points[c];
    for (; i < stop; ++i) {
      out[i - first] = scale * static_cast<float>(values[i - first] - zero);
    }
  }
  std::fill(out.begin() + (i - first), out.end(), 0.0f);
  for (auto it = std::lower_bound(outlier_indices.begin(),
                                  outlier_indices.end(), first);
       it != outlier_indices.end() && *it < end; ++it) {
    const size_t k = static_cast<size_t>(it - outlier_indices.begin());
    if (k < outlier_values.size()) out[*it - first] = outlier_values[k];
  }
}

void UnscaleColumns(const ColumnScales& columns, int64_t first,
                    absl::Span<float> values) {
  if (columns.empty()) return;
  int64_t col = first % columns.cols;
  for (float& v : values) {
    v /= columns.of(col);
    if (++col == columns.cols) col = 0;
  }
}

absl::StatusOr<Tensor> RebuiltTensor::ToFloatTensor() const {
  if (int8) {
    const int64_t elements = static_cast<int64_t>(int8->values.size());
    for (size_t k = 0; k < outlier_indices.size(); ++k) {
      const int64_t index = outlier_indices[k];
      if (index < 0 || index >= elements || k >= outlier_values.size() ||
          (k > 0 && index <= outlier_indices[k - 1])) {
        return absl::DataLossError(absl::StrCat("tensor '", name, "': outlier ",
                                                k, " does not fit the tensor"));
      }
    }
    std::vector<float> values(int8->values.size());
    DequantizeRange(*int8, elements, 0, int8->values, outlier_indices,
                    outlier_values, absl::MakeSpan(values));
    if (!columns.empty() &&
        (columns.cols <= 0 || elements % columns.cols != 0 ||
         static_cast<int64_t>(columns.scales.size()) * columns.repeat !=
             columns.cols)) {
      return absl::DataLossError(absl::StrCat(
          "tensor '", name, "': its column scales do not fit the tensor"));
    }
    UnscaleColumns(columns, 0, absl::MakeSpan(values));
    return MakeFloat32Tensor(name, shape, values);
  }
  if (stored.dtype == DType::kFloat16 || stored.dtype == DType::kBFloat16) {
    ASSIGN_OR_RETURN(const std::vector<float> values, ToFloat32(stored));
    return MakeFloat32Tensor(name, shape, values);
  }
  return stored;
}

absl::StatusOr<QuantizedTensor> RebuiltTensor::Int8Output() const {
  if (!int8) {
    return absl::InternalError(
        absl::StrCat("tensor '", name, "' is not an int8 layer"));
  }
  if (columns.empty()) return *int8;
  ASSIGN_OR_RETURN(const Tensor values, ToFloatTensor());
  ASSIGN_OR_RETURN(const std::vector<float> floats, ToFloat32(values));
  return Quantize(name, shape, floats, QuantScheme::kPerChannelSymmetric);
}

}  // namespace weightcast
