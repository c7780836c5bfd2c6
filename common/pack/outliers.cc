#include "common/pack/outliers.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
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

absl::StatusOr<OutlierList> FindOutliersFromRows(absl::string_view name,
                                                 int64_t rows, int64_t cols,
                                                 const FloatRowReader& read,
                                                 int64_t chunk_rows,
                                                 bool per_row) {
  OutlierList out;
  if (rows <= 0 || cols <= 0) return out;
  chunk_rows = std::clamp<int64_t>(chunk_rows, 1, rows);
  const int64_t n = rows * cols;
  // FindOutliers' groups: each row, or the whole tensor; sums in index order.
  const int64_t group = per_row && rows > 1 ? cols : n;
  std::vector<double> sums(static_cast<size_t>(n / group), 0.0);
  RETURN_IF_ERROR(ForEachRowChunk(
      read, 0, rows, cols, chunk_rows, name,
      [&](int64_t row, absl::Span<const float> values) {
        const int64_t first = row * cols;
        for (size_t k = 0; k < values.size(); ++k) {
          const double v = values[k];
          sums[static_cast<size_t>((first + static_cast<int64_t>(k)) /
                                   group)] += v * v;
        }
      }));
  // The largest (|w| / RMS, index) pairs, as FindOutliers' nth_element keeps
  // them (a strict order: indices differ), in a min-heap of at most `limit`.
  struct Candidate {
    double ratio;
    int64_t index;
    uint16_t half;
    bool operator>(const Candidate& o) const {
      return std::tie(ratio, index) > std::tie(o.ratio, o.index);
    }
  };
  const size_t limit = static_cast<size_t>(
      std::floor(kMaxOutlierFraction * static_cast<double>(n)));
  std::vector<Candidate> heap;
  RETURN_IF_ERROR(ForEachRowChunk(
      read, 0, rows, cols, chunk_rows, name,
      [&](int64_t row, absl::Span<const float> values) {
        const int64_t first = row * cols;
        for (size_t k = 0; k < values.size(); ++k) {
          const int64_t i = first + static_cast<int64_t>(k);
          const double rms = std::sqrt(sums[static_cast<size_t>(i / group)] /
                                       static_cast<double>(group));
          if (!(rms > 0)) continue;
          const double ratio = std::abs(static_cast<double>(values[k])) / rms;
          const uint16_t half = FloatToHalf(values[k]);
          if (!(ratio > kOutlierRmsMultiple) ||
              !std::isfinite(HalfToFloat(half)))
            continue;
          heap.push_back({ratio, i, half});
          std::push_heap(heap.begin(), heap.end(), std::greater<>());
          if (heap.size() > limit) {
            std::pop_heap(heap.begin(), heap.end(), std::greater<>());
            heap.pop_back();
          }
        }
      }));
  std::sort(
      heap.begin(), heap.end(),
      [](const Candidate& a, const Candidate& b) { return a.index < b.index; });
  for (const Candidate& c : heap) {
    out.indices.push_back(c.index);
    out.values.push_back(c.half);
  }
  return out;
}

void ZeroOutliers(const OutlierList& outliers, int64_t first,
                  absl::Span<float> values) {
  const int64_t end = first + static_cast<int64_t>(values.size());
  for (auto it = std::lower_bound(outliers.indices.begin(),
                                  outliers.indices.end(), first);
       it != outliers.indices.end() && *it < end; ++it) {
    values[static_cast<size_t>(*it - first)] = 0;
  }
}

FloatRowReader WithoutOutliers(FloatRowReader read, int64_t cols,
                               const OutlierList& outliers) {
  return [read = std::move(read), cols, &outliers](
             int64_t first_row,
             int64_t rows) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(std::vector<float> values, read(first_row, rows));
    ZeroOutliers(outliers, first_row * cols, absl::MakeSpan(values));
    return values;
  };
}

std::vector<float> OutlierFloats(const OutlierList& outliers) {
  std::vector<float> out;
  out.reserve(outliers.values.size());
  for (uint16_t v : outliers.values) out.push_back(HalfToFloat(v));
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

void SaturateOutliers(const QuantizedTensor& params,
                      const OutlierList& outliers, absl::Span<int8_t> values) {
  SaturateOutliers(params, outliers, static_cast<int64_t>(values.size()), 0,
                   values);
}

void SaturateOutliers(const QuantizedTensor& params,
                      const OutlierList& outliers, int64_t elements,
                      int64_t first, absl::Span<int8_t> values) {
  if (params.scales.empty() || params.zero_points.size() < params.scales.size())
    return;
  // The scale group an element belongs to, as Dequantize's.
  const int64_t group = std::max<int64_t>(
      1, elements / static_cast<int64_t>(params.scales.size()));
  const int64_t end = first + static_cast<int64_t>(values.size());
  const auto& indices = outliers.indices;  // increasing (ParseOutliers)
  for (auto it = std::lower_bound(indices.begin(), indices.end(), first);
       it != indices.end() && *it < end; ++it) {
    const size_t k = static_cast<size_t>(it - indices.begin());
    if (k >= outliers.values.size()) break;
    const size_t c = static_cast<size_t>(*it / group);
    if (c >= params.scales.size()) continue;  // as Dequantize: not covered
    const double q =
        std::nearbyint(HalfToFloat(outliers.values[k]) / params.scales[c]) +
        params.zero_points[c];
    values[*it - first] = static_cast<int8_t>(std::clamp(q, -127.0, 127.0));
  }
}

Fidelity MeasureFidelityWithOutliers(absl::Span<const float> original,
                                     const QuantizedTensor& quantized,
                                     absl::Span<const int8_t> decoded,
                                     const OutlierList& outliers,
                                     uint64_t coded_bytes) {
  const std::vector<float> exact = OutlierFloats(outliers);
  FidelityMeter meter(quantized, original.size());
  meter.SetExactValues(outliers.indices, exact);
  meter.Add(0, original, quantized.values, decoded);
  return meter.Finish(coded_bytes);
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
