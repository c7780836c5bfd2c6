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

Fidelity MeasureFidelity(absl::Span<const float> original,
                         const QuantizedTensor& quantized,
                         absl::Span<const int8_t> decoded,
                         uint64_t coded_bytes) {
  const std::vector<float> reconstruction = Dequantize(quantized, decoded);
  const std::vector<float> int8_reference = Dequantize(quantized);
  Fidelity fidelity;
  fidelity.sqnr_db = SqnrDb(original, reconstruction);
  fidelity.sqnr_int8_db = SqnrDb(int8_reference, reconstruction);
  fidelity.channel_sqnr_db =
      ChannelSqnrDb(original, reconstruction,
                    quantized.shape.size() >= 2 ? quantized.shape[0] : 1);
  for (size_t i = 0; i < original.size(); ++i) {
    fidelity.max_abs_error = std::max(
        fidelity.max_abs_error,
        std::abs(static_cast<double>(original[i]) - reconstruction[i]));
  }
  fidelity.bits_per_weight = original.empty()
                                 ? 0
                                 : 8.0 * static_cast<double>(coded_bytes) /
                                       static_cast<double>(original.size());
  return fidelity;
}

}  // namespace weightcast
