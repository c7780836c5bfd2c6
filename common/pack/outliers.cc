#include "common/pack/outliers.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/pack/zstd_codec.h"

namespace weightcast {
namespace {

constexpr size_t kBytesPerOutlier = 6;  // uint32 gap + float16

}  // namespace

OutlierList FindOutliers(absl::Span<const int64_t> shape,
                         absl::Span<const float> values, bool per_row) {
  OutlierList out;
  const int64_t n = static_cast<int64_t>(values.size());
  if (n == 0) return out;
  int64_t rows = per_row && shape.size() >= 2 ? shape[0] : 1;
  if (rows <= 0 || n % rows != 0) rows = 1;
  const int64_t cols = n / rows;
  // (|w| / RMS, index) of every weight beyond the threshold.
  std::vector<std::pair<double, int64_t>> candidates;
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t i = r * cols; i < (r + 1) * cols; ++i)
      sum += static_cast<double>(values[i]) * values[i];
    const double rms = std::sqrt(sum / static_cast<double>(cols));
    if (!(rms > 0)) continue;
    for (int64_t i = r * cols; i < (r + 1) * cols; ++i) {
      const double ratio = std::abs(static_cast<double>(values[i])) / rms;
      if (ratio > kOutlierRmsMultiple &&
          std::isfinite(HalfToFloat(FloatToHalf(values[i])))) {
        candidates.emplace_back(ratio, i);
      }
    }
  }
  const size_t limit = static_cast<size_t>(
      std::floor(kMaxOutlierFraction * static_cast<double>(n)));
  if (candidates.size() > limit) {
    std::nth_element(candidates.begin(), candidates.begin() + limit,
                     candidates.end(), std::greater<>());
    candidates.resize(limit);
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  for (const auto& [ratio, index] : candidates) {
    out.indices.push_back(index);
    out.values.push_back(FloatToHalf(values[index]));
  }
  return out;
}

absl::StatusOr<QuantizedTensor> QuantizeWithoutOutliers(
    absl::string_view name, absl::Span<const int64_t> shape,
    absl::Span<const float> values, QuantScheme scheme,
    const OutlierList& outliers) {
  std::vector<float> rest(values.begin(), values.end());
  for (int64_t index : outliers.indices) rest[index] = 0;
  return Quantize(name, shape, rest, scheme);
}

std::vector<float> DequantizeWithOutliers(const QuantizedTensor& params,
                                          absl::Span<const int8_t> decoded,
                                          const OutlierList& outliers) {
  std::vector<float> out = Dequantize(params, decoded);
  for (size_t k = 0; k < outliers.indices.size(); ++k)
    out[outliers.indices[k]] = HalfToFloat(outliers.values[k]);
  return out;
}

void SaturateOutliers(const QuantizedTensor& params,
                      const OutlierList& outliers, absl::Span<int8_t> values) {
  if (params.scales.empty() || params.zero_points.size() < params.scales.size())
    return;
  // The scale group an element belongs to, as Dequantize's.
  const int64_t group = std::max<int64_t>(
      1, static_cast<int64_t>(values.size() / params.scales.size()));
  for (size_t k = 0; k < outliers.indices.size(); ++k) {
    const int64_t index = outliers.indices[k];
    if (index < 0 || static_cast<size_t>(index) >= values.size()) continue;
    const size_t c = static_cast<size_t>(index / group);
    if (c >= params.scales.size()) continue;  // as Dequantize: not covered
    const double q =
        std::nearbyint(HalfToFloat(outliers.values[k]) / params.scales[c]) +
        params.zero_points[c];
    values[index] = static_cast<int8_t>(std::clamp(q, -127.0, 127.0));
  }
}

Fidelity MeasureFidelityWithOutliers(absl::Span<const float> original,
                                     const QuantizedTensor& quantized,
                                     absl::Span<const int8_t> decoded,
                                     const OutlierList& outliers,
                                     uint64_t coded_bytes) {
  Fidelity fidelity;
  const std::vector<float> reconstruction =
      DequantizeWithOutliers(quantized, decoded, outliers);
  fidelity.sqnr_db = SqnrDb(original, reconstruction);
  fidelity.channel_sqnr_db = ChannelSqnrDb(
      original, reconstruction,
      quantized.shape.size() >= 2 && quantized.shape[0] > 0 &&
              original.size() % static_cast<size_t>(quantized.shape[0]) == 0
          ? quantized.shape[0]
          : 1);
  fidelity.sqnr_int8_db =
      SqnrDb(DequantizeWithOutliers(quantized, quantized.values, outliers),
             reconstruction);
  for (size_t i = 0; i < original.size(); ++i) {
    fidelity.max_abs_error = std::max(
        fidelity.max_abs_error,
        std::abs(static_cast<double>(original[i]) - reconstruction[i]));
  }
  fidelity.bits_per_weight =
      original.empty() ? 0.0 : 8.0 * coded_bytes / original.size();
  return fidelity;
}

std::vector<uint8_t> SerializeOutliers(const OutlierList& outliers) {
  const size_t count = outliers.indices.size();
  std::vector<uint8_t> raw(count * kBytesPerOutlier);
  int64_t previous = -1;
  for (size_t k = 0; k < count; ++k) {
    const uint32_t gap =
        static_cast<uint32_t>(outliers.indices[k] - previous - 1);
    previous = outliers.indices[k];
    for (int b = 0; b < 4; ++b)
      raw[4 * k + b] = static_cast<uint8_t>(gap >> (8 * b));
    raw[4 * count + 2 * k] = static_cast<uint8_t>(outliers.values[k]);
    raw[4 * count + 2 * k + 1] = static_cast<uint8_t>(outliers.values[k] >> 8);
  }
  return ZstdCompress(raw);
}

absl::StatusOr<OutlierList> ParseOutliers(absl::Span<const uint8_t> frame,
                                          uint64_t count, int64_t elements) {
  if (count == 0 || elements <= 0 || count > static_cast<uint64_t>(elements) ||
      count > static_cast<uint64_t>(elements / kMaxOutlierDivisor + 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(count, " outliers for ", elements, " weights (at most 1/",
                     kMaxOutlierDivisor, " of them)"));
  }
  auto raw = ZstdDecompress(frame, count * kBytesPerOutlier);
  if (!raw.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("outlier list: ", raw.status().message()));
  }
  OutlierList out;
  out.indices.reserve(count);
  out.values.reserve(count);
  int64_t previous = -1;
  for (uint64_t k = 0; k < count; ++k) {
    uint32_t gap = 0;
    for (int b = 0; b < 4; ++b)
      gap |= static_cast<uint32_t>((*raw)[4 * k + b]) << (8 * b);
    const int64_t index = previous + 1 + static_cast<int64_t>(gap);
    if (index >= elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("outlier ", k, " has index ", index, ", past the ",
                       elements, " weights"));
    }
    const uint16_t value = static_cast<uint16_t>(
        (*raw)[4 * count + 2 * k] | ((*raw)[4 * count + 2 * k + 1] << 8));
    if (!std::isfinite(HalfToFloat(value))) {
      return absl::InvalidArgumentError(
          absl::StrCat("outlier ", k, " is not a finite float16"));
    }
    out.indices.push_back(index);
    out.values.push_back(value);
    previous = index;
  }
  return out;
}

}  // namespace weightcast
