// The int8 quantization front end of a layer, chosen per layer: per-tensor symmetric scales (the
// seed paper's, one scale for the whole tensor) or per-channel symmetric scales (one per output
// channel, i.e. per row of the picture). Pure functions; thread-safe.
//
// The rule (auto): a layer is coded both ways at its tier (same codec, same QP) and per-channel
// replaces per-tensor when it raises the layer's channel SQNR (fidelity.h: every output channel
// weighs the same) by more than kPerChannelMinGainDb, one bit's worth. Per-tensor scales lose
// about 3 dB of that on an ordinary layer (the largest weight of a Gaussian row is smaller than the
// largest of the whole matrix), which a finer QP buys back at the same rate and which is not worth
// a different front end; they lose more than a bit when a few weights or rows set the scale
// (outliers, heavy tails, a batch norm folded into the rows): the tier's QP then quantizes the
// other channels far more coarsely than it quantizes an ordinary layer, and the layer loses the
// fidelity the tier stands for. docs/BENCHMARKS.md ("Quantization front ends") measures why the
// equal-slope alternative (6.02 dB per extra bit) fails: a per-tensor layer that HEVC has erased
// costs almost no bytes, so no line through it is ever beaten.
#ifndef WEIGHTCAST_COMMON_PACK_FRONT_END_H_
#define WEIGHTCAST_COMMON_PACK_FRONT_END_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"

namespace weightcast {

inline constexpr double kPerChannelMinGainDb = 6.02;

// True when per-channel coding (`per_channel`) replaces per-tensor coding (`per_tensor`) of the
// same layer at the same tier: its channel SQNR is higher by more than kPerChannelMinGainDb.
bool PerChannelWins(const Fidelity& per_tensor, const Fidelity& per_channel);

// False when per-channel scales cannot win for `values` (row-major, `shape`) so it need not be
// coded: a tensor of one channel, or every channel's largest |w| within a factor 2 of the
// tensor's (then no channel's int8 step shrinks by a bit). Cheap: one pass over the values.
bool PerChannelMayWin(absl::Span<const int64_t> shape, absl::Span<const float> values);

// The front end a layer policy names: "auto" (nullopt) or a scheme; "per-tensor" and
// "per-channel" are short for the symmetric schemes. INVALID_ARGUMENT for anything else.
absl::StatusOr<std::optional<QuantScheme>> FrontEndFromName(absl::string_view name);
std::string FrontEndName(const std::optional<QuantScheme>& scheme);  // "auto" or the scheme's name

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_FRONT_END_H_
