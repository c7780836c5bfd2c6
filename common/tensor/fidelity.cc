#include "common/tensor/fidelity.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace weightcast {

double SqnrDb(absl::Span<const float> reference,
              absl::Span<const float> reconstruction) {
  assert(reference.size() == reconstruction.size());
  double signal = 0, noise = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double r = reference[i];
    const double e = r - static_cast<double>(reconstruction[i]);
    signal += r * r;
    noise += e * e;
  }
  if (noise == 0) return std::numeric_limits<double>::infinity();
  if (signal == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

double ChannelSqnrDb(absl::Span<const float> reference,
                     absl::Span<const float> reconstruction, int64_t rows) {
  assert(reference.size() == reconstruction.size());
  if (rows <= 0 || reference.size() % static_cast<size_t>(rows) != 0)
    return SqnrDb(reference, reconstruction);
  const size_t cols = reference.size() / static_cast<size_t>(rows);
  double nsr_sum = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double signal = 0, noise = 0;
    for (size_t i = r * cols; i < (r + 1) * cols; ++i) {
      const double x = reference[i];
      const double e = x - static_cast<double>(reconstruction[i]);
      signal += x * x;
      noise += e * e;
    }
    if (signal == 0) continue;
    nsr_sum += noise / signal;
    ++counted;
  }
  if (nsr_sum == 0) return std::numeric_limits<double>::infinity();
  return -10.0 * std::log10(nsr_sum / static_cast<double>(counted));
}

double ColumnScaledSqnrDb(absl::Span<const float> reference,
                          absl::Span<const float> reconstruction,
                          absl::Span<const float> column_scales, int64_t repeat,
                          int64_t cols) {
  assert(reference.size() == reconstruction.size());
  if (column_scales.empty() || cols <= 0 || repeat <= 0)
    return SqnrDb(reference, reconstruction);
  double signal = 0, noise = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const size_t column = static_cast<size_t>(static_cast<int64_t>(i) % cols);
    const double scale = column_scales[std::min(
        column / static_cast<size_t>(repeat), column_scales.size() - 1)];
    const double r = reference[i];
    const double e = r - static_cast<double>(reconstruction[i]);
    signal += scale * scale * r * r;
    noise += scale * scale * e * e;
  }
  if (noise == 0) return std::numeric_limits<double>::infinity();
  if (signal == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

FidelityMeter::FidelityMeter(const QuantizedTensor& params, size_t elements)
    : scales_(params.scales),
      zero_points_(params.zero_points),
      n_(elements),
      // As QuantizedTensor::ElementsPerScale() (0 without scales).
      group_(params.scales.empty() ? 0 : elements / params.scales.size()) {
  const int64_t shape_rows = params.shape.size() >= 2 ? params.shape[0] : 1;
  by_rows_ = shape_rows > 0 && n_ % static_cast<size_t>(shape_rows) == 0;
  const size_t rows = by_rows_ ? static_cast<size_t>(shape_rows) : 1;
  cols_ = n_ == 0 ? 0 : n_ / rows;
}

float FidelityMeter::Dequantize(size_t i, int8_t value) const {
  const size_t c = i / group_;
  if (c >= scales_.size()) return 0.0f;  // as Dequantize leaves it
  return scales_[c] * static_cast<float>(value - zero_points_[c]);
}

void FidelityMeter::Add(size_t first, absl::Span<const float> original,
                        absl::Span<const int8_t> quantized,
                        absl::Span<const int8_t> decoded) {
  assert(decoded.size() == original.size());
  assert(quantized.size() == original.size());
  assert(cols_ == 0 || (first % cols_ == 0 && original.size() % cols_ == 0));
  assert(first + original.size() <= n_);
  if (cols_ == 0) return;
  // The next element with an exact value, from `first` on.
  size_t exact = static_cast<size_t>(
      std::lower_bound(exact_indices_.begin(), exact_indices_.end(),
                       static_cast<int64_t>(first)) -
      exact_indices_.begin());
  // Bounded: one round per row of `original`.
  for (size_t row = first; row < first + original.size(); row += cols_) {
    double row_signal = 0, row_noise = 0;
    for (size_t i = row; i < row + cols_; ++i) {
      const bool is_exact = exact < exact_indices_.size() &&
                            exact_indices_[exact] == static_cast<int64_t>(i);
      const float reconstruction =
          is_exact ? exact_values_[exact] : Dequantize(i, decoded[i - first]);
      const double x = original[i - first];
      const double e = x - static_cast<double>(reconstruction);
      signal_ += x * x;
      noise_ += e * e;
      row_signal += x * x;
      row_noise += e * e;
      const double q = is_exact ? exact_values_[exact++]
                                : Dequantize(i, quantized[i - first]);
      const double qe = q - static_cast<double>(reconstruction);
      int8_signal_ += q * q;
      int8_noise_ += qe * qe;
      max_abs_error_ = std::max(
          max_abs_error_,
          std::abs(static_cast<double>(original[i - first]) - reconstruction));
    }
    if (row_signal == 0) continue;
    nsr_sum_ += row_noise / row_signal;
    ++counted_;
  }
}

void FidelityMeter::SetExactValues(absl::Span<const int64_t> indices,
                                   absl::Span<const float> values) {
  assert(indices.size() == values.size());
  exact_indices_ = indices;
  exact_values_ = values;
}

Fidelity FidelityMeter::Finish(uint64_t coded_bytes) const {
  const auto db = [](double s, double e) {
    if (e == 0) return std::numeric_limits<double>::infinity();
    if (s == 0) return -std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(s / e);
  };
  Fidelity fidelity;
  fidelity.max_abs_error = max_abs_error_;
  fidelity.sqnr_db = db(signal_, noise_);
  fidelity.sqnr_int8_db = db(int8_signal_, int8_noise_);
  if (!by_rows_) {
    fidelity.channel_sqnr_db = fidelity.sqnr_db;
  } else if (nsr_sum_ == 0) {
    fidelity.channel_sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    fidelity.channel_sqnr_db =
        -10.0 * std::log10(nsr_sum_ / static_cast<double>(counted_));
  }
  fidelity.bits_per_weight = n_ == 0 ? 0
                                     : 8.0 * static_cast<double>(coded_bytes) /
                                           static_cast<double>(n_);
  return fidelity;
}

// As SqnrDb(original, Dequantize(quantized, decoded)), SqnrDb(Dequantize(
// quantized), that) and ChannelSqnrDb over the rows, with the same sums in the
// same order, but one element at a time: no float copies of a large layer.
Fidelity MeasureFidelity(absl::Span<const float> original,
                         const QuantizedTensor& quantized,
                         absl::Span<const int8_t> decoded,
                         uint64_t coded_bytes) {
  assert(original.size() == decoded.size());
  assert(original.size() == quantized.values.size());
  FidelityMeter meter(quantized, quantized.values.size());
  meter.Add(0, original, quantized.values, decoded);
  return meter.Finish(coded_bytes);
}

}  // namespace weightcast
