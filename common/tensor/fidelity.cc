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

// As SqnrDb(original, Dequantize(quantized, decoded)), SqnrDb(Dequantize(
// quantized), that) and ChannelSqnrDb over the rows, with the same sums in the
// same order, but one element at a time: no float copies of a large layer.
Fidelity MeasureFidelity(absl::Span<const float> original,
                         const QuantizedTensor& quantized,
                         absl::Span<const int8_t> decoded,
                         uint64_t coded_bytes) {
  assert(original.size() == decoded.size());
  assert(original.size() == quantized.values.size());
  const size_t n = original.size();
  const size_t group = static_cast<size_t>(quantized.ElementsPerScale());
  const auto dequantize = [&](size_t i, int8_t value) {
    const size_t c = i / group;
    if (c >= quantized.scales.size()) return 0.0f;  // as Dequantize leaves it
    return quantized.scales[c] *
           static_cast<float>(value - quantized.zero_points[c]);
  };
  const int64_t shape_rows =
      quantized.shape.size() >= 2 ? quantized.shape[0] : 1;
  const bool by_rows =
      shape_rows > 0 && n % static_cast<size_t>(shape_rows) == 0;
  const size_t rows = by_rows ? static_cast<size_t>(shape_rows) : 1;
  const size_t cols = n == 0 ? 0 : n / rows;
  Fidelity fidelity;
  double signal = 0, noise = 0, int8_signal = 0, int8_noise = 0;
  double nsr_sum = 0;
  int64_t counted = 0;
  for (size_t r = 0; r < rows && n > 0; ++r) {
    double row_signal = 0, row_noise = 0;
    for (size_t i = r * cols; i < (r + 1) * cols; ++i) {
      const float reconstruction = dequantize(i, decoded[i]);
      const double x = original[i];
      const double e = x - static_cast<double>(reconstruction);
      signal += x * x;
      noise += e * e;
      row_signal += x * x;
      row_noise += e * e;
      const double q = dequantize(i, quantized.values[i]);
      const double qe = q - static_cast<double>(reconstruction);
      int8_signal += q * q;
      int8_noise += qe * qe;
      fidelity.max_abs_error =
          std::max(fidelity.max_abs_error,
                   std::abs(static_cast<double>(original[i]) - reconstruction));
    }
    if (row_signal == 0) continue;
    nsr_sum += row_noise / row_signal;
    ++counted;
  }
  const auto db = [](double s, double e) {
    if (e == 0) return std::numeric_limits<double>::infinity();
    if (s == 0) return -std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(s / e);
  };
  fidelity.sqnr_db = db(signal, noise);
  fidelity.sqnr_int8_db = db(int8_signal, int8_noise);
  if (!by_rows) {
    fidelity.channel_sqnr_db = fidelity.sqnr_db;
  } else if (nsr_sum == 0) {
    fidelity.channel_sqnr_db = std::numeric_limits<double>::infinity();
  } else {
    fidelity.channel_sqnr_db =
        -10.0 * std::log10(nsr_sum / static_cast<double>(counted));
  }
  fidelity.bits_per_weight =
      n == 0 ? 0
             : 8.0 * static_cast<double>(coded_bytes) / static_cast<double>(n);
  return fidelity;
}

}  // namespace weightcast
