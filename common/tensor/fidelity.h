// Fidelity of a reconstruction: SQNR against the float original and against the
// int8 values, largest absolute error, and bits per weight. Pure functions;
// thread-safe.
#ifndef WEIGHTCAST_COMMON_TENSOR_FIDELITY_H_
#define WEIGHTCAST_COMMON_TENSOR_FIDELITY_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "common/tensor/quantize.h"

namespace weightcast {

struct Fidelity {
  double sqnr_db = 0;  // reconstruction vs float original; +inf when identical
  double sqnr_int8_db =
      0;  // reconstruction vs the dequantized int8 before coding; +inf if exact
  double max_abs_error = 0;  // vs float original, in weight units
  double bits_per_weight = 0;
  double channel_sqnr_db =
      0;  // ChannelSqnrDb vs the float original (not stored in packed layers)
};

// 10·log10(Σ reference² / Σ (reference − reconstruction)²). +inf when they are
// identical; 0 dB signal (all zeros) with an error gives -inf.
double SqnrDb(absl::Span<const float> reference,
              absl::Span<const float> reconstruction);

// The SQNR of a matrix taken channel by channel: -10·log10 of the mean over the
// rows (output channels) of each row's noise-to-signal ratio. Every channel
// weighs the same however large its weights are, as every layer does in
// rate_allocation.h: a channel's relative error is what reaches the next layer
// once a following normalization (or a batch norm folded into the rows)
// rescales it. Rows whose reference is all zeros carry no signal and are left
// out; +inf when every other row is exact. `reference` holds `rows` rows of
// equal length.
double ChannelSqnrDb(absl::Span<const float> reference,
                     absl::Span<const float> reconstruction, int64_t rows);

// SqnrDb with each element's weight and error times its column's scale,
// `column_scales[c / repeat]` for column c of a matrix of `cols` columns in
// row-major order: the SNR of the picture a layer coded with column scales
// makes (what its rate curve compares with plain layers' SQNR). Plain SqnrDb
// without scales (or with `cols` or `repeat` not positive). Columns past
// `column_scales.size() * repeat` take the last scale (callers pass scales
// that cover the matrix: LayerEncodeOptions requires it).
double ColumnScaledSqnrDb(absl::Span<const float> reference,
                          absl::Span<const float> reconstruction,
                          absl::Span<const float> column_scales, int64_t repeat,
                          int64_t cols);

// MeasureFidelity computed a part at a time, with the same sums in the same
// order (so bit for bit the same): Add() the tensor's rows in order, then
// Finish(). `params`: the quantization's scheme, shape, scales and zero points
// (its values are not used); `elements`: the tensor's.
class FidelityMeter {
 public:
  FidelityMeter(const QuantizedTensor& params, size_t elements);
  // Elements [first, first + original.size()) of the tensor, whole rows of
  // `shape` (dimension 0), after those before them: the float original, the
  // int8 values that were coded and their reconstruction (same lengths).
  void Add(size_t first, absl::Span<const float> original,
           absl::Span<const int8_t> quantized,
           absl::Span<const int8_t> decoded);
  Fidelity Finish(uint64_t coded_bytes) const;

  // Elements whose reconstruction (coded and int8 alike) is a given float, not
  // their int8 value dequantized: `indices` strictly increasing, over the
  // whole tensor, one value each. Both spans must outlive the meter.
  void SetExactValues(absl::Span<const int64_t> indices,
                      absl::Span<const float> values);

 private:
  float Dequantize(size_t i, int8_t value) const;

  absl::Span<const int64_t> exact_indices_;
  absl::Span<const float> exact_values_;

  std::vector<float> scales_;
  std::vector<int32_t> zero_points_;
  size_t n_ = 0, group_ = 0, cols_ = 0;
  bool by_rows_ = false;
  double signal_ = 0, noise_ = 0, int8_signal_ = 0, int8_noise_ = 0;
  double nsr_sum_ = 0, max_abs_error_ = 0;
  int64_t counted_ = 0;
};

// Measures `decoded` (int8 values reconstructed from a bitstream of
// `coded_bytes`) against `original` (the float weights) and `quantized` (the
// int8 tensor that was coded).
Fidelity MeasureFidelity(absl::Span<const float> original,
                         const QuantizedTensor& quantized,
                         absl::Span<const int8_t> decoded,
                         uint64_t coded_bytes);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_FIDELITY_H_
