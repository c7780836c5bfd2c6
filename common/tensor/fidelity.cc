#include "common/tensor/fidelity.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace weightcast {

double SqnrDb(absl::Span<const float> reference, absl::Span<const float> reconstruction) {
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

Fidelity MeasureFidelity(absl::Span<const float> original, const QuantizedTensor& quantized,
                         absl::Span<const int8_t> decoded, uint64_t coded_bytes) {
  const std::vector<float> reconstruction = Dequantize(quantized, decoded);
  const std::vector<float> int8_reference = Dequantize(quantized);
  Fidelity fidelity;
  fidelity.sqnr_db = SqnrDb(original, reconstruction);
  fidelity.sqnr_int8_db = SqnrDb(int8_reference, reconstruction);
  for (size_t i = 0; i < original.size(); ++i) {
    fidelity.max_abs_error =
        std::max(fidelity.max_abs_error, std::abs(static_cast<double>(original[i]) - reconstruction[i]));
  }
  fidelity.bits_per_weight =
      original.empty() ? 0 : 8.0 * static_cast<double>(coded_bytes) / static_cast<double>(original.size());
  return fidelity;
}

}  // namespace weightcast
