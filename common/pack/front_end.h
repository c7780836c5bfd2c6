// The int8 quantization front end of a layer: per-tensor symmetric scales (the
// seed paper's, one scale for the whole tensor) or per-channel symmetric scales
// (one per output channel, i.e. per row of the picture), and the rule the
// default front end, auto, chooses one by. Pure functions; thread-safe.
//
// The rule, per layer (the same at every tier): per-channel when per-tensor
// int8 is not transparent for the layer's output channels and per-channel int8
// repairs it, i.e. both of
//   - the per-tensor int8 values' channel SQNR (fidelity.h: the mean over
//   output channels of
//     each channel's noise-to-signal ratio) is below
//     kTransparentInt8SqnrDb, 22.8 dB: the average channel keeps fewer than 5
//     of int8's 8 bits (a Gaussian quantized over ±4σ with b bits has 6.02·b
//     − 7.27 dB), because a few weights or rows set the scale (outliers, heavy
//     tails, a batch norm folded into the rows) and the typical channel falls
//     into a handful of int8 steps, which every HEVC tier then quantizes
//     further;
//   - per-channel int8 raises that channel SQNR by more than
//   kPerChannelMinGainDb (one bit):
//     scales per row help (a few outlier columns, which are in every row, are
//     helped less).
// The outlier front end (outliers.h) is a candidate on the same measure:
//   - per-tensor scales + outliers when that makes the layer transparent
//     (channel SQNR >= kTransparentInt8SqnrDb) and gains more than a bit over
//     per-tensor int8, or more than two bits (kOutliersMinGainOnTransparentDb)
//     when per-tensor int8 was transparent already: a layer whose range a few
//     weights set (x20 weights, outlier columns, heavy tails) keeps ~5 bits
//     of int8 at best, which the HEVC tiers then erase (4 dB at q22 on
//     bench/front_end_benchmark's outlier columns). Per-channel scales on top
//     when they gain more than a bit over that (the same test as above);
//   - otherwise the pick above, + outliers when that is still not transparent
//     and the outliers gain more than a bit on it.
// A layer with no weight beyond outliers.h's threshold has no such candidate
// and is coded exactly as before; so is every layer of the Fashion-MNIST
// models (docs/BENCHMARKS.md).
// Why not a rate-distortion test at each tier: measured on every layer of
// bench/front_end_benchmark and of the Fashion-MNIST models
// (docs/BENCHMARKS.md), per-channel scales buy 4-6 dB of SQNR per extra bit per
// weight at every tier, the slope a finer QP buys with per-tensor scales too,
// so no equal-rate or equal-slope test separates the layers per-channel repairs
// from those it merely moves up the same curve (+10 % to +1,240 % bytes on the
// Fashion-MNIST FC layers, top-1 no better than a finer QP's). What separates
// them is whether per-tensor int8 is transparent at all: every Fashion-MNIST
// layer keeps >= 29.9 dB of channel SQNR at int8, the synthetic outlier and
// folded layers 6.9-20 dB. Deciding per layer, not per tier, also keeps a
// refinement's coarse and fine tiers, a budget tier's QP grid and a version's
// delta tiers on the same scales.
#ifndef WEIGHTCAST_COMMON_PACK_FRONT_END_H_
#define WEIGHTCAST_COMMON_PACK_FRONT_END_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/quantize.h"

namespace weightcast {

inline constexpr double kTransparentInt8SqnrDb = 6.02 * 5 - 7.27;
inline constexpr double kPerChannelMinGainDb = 6.02;
inline constexpr double kOutliersMinGainOnTransparentDb = 2 * 6.02;

// The int8 channel SQNR (dB, vs the float values) of each front end for one
// tensor, and the rule's pick.
struct FrontEndChoice {
  QuantScheme scheme = QuantScheme::kPerTensorSymmetric;
  double per_tensor_channel_sqnr_db = 0;
  double per_channel_channel_sqnr_db =
      0;                  // = per-tensor's for a tensor of one channel
  bool outliers = false;  // the outlier front end on `scheme`
  // The outlier candidates' int8 channel SQNR (outliers restored) and counts;
  // counts 0 (and SQNR as without) when the rule finds no outlier.
  double per_tensor_outliers_channel_sqnr_db = 0;
  double per_channel_outliers_channel_sqnr_db = 0;
  int64_t per_tensor_outliers = 0;
  int64_t per_channel_outliers = 0;
};

// True when the rule above takes per-channel scales over per-tensor ones, given
// each front end's int8 channel SQNR.
bool PerChannelWins(double per_tensor_channel_sqnr_db,
                    double per_channel_channel_sqnr_db);

// The outlier part of the rule: given the pick without outliers and each
// candidate's int8 channel SQNR, whether to take per-tensor + outliers
// (returns kPerTensor) or the pick + outliers (returns the pick), or neither
// (nullopt). `*_candidate`: whether the rule found outliers for that scheme.
std::optional<QuantScheme> OutliersWin(QuantScheme pick,
                                       const FrontEndChoice& measured,
                                       bool per_tensor_candidate,
                                       bool per_channel_candidate);

// One candidate measured: the int8 channel SQNR of a scheme (with the outlier
// front end or without) and, with it, how many outliers outliers.h's rule
// finds (0: no outlier candidate; its SQNR is then unused).
struct FrontEndMeasure {
  double channel_sqnr_db = 0;
  int64_t outliers = 0;
};
using MeasureFrontEnd = std::function<absl::StatusOr<FrontEndMeasure>(
    QuantScheme scheme, bool outliers)>;

// The rule for a tensor of `rows` output channels, each candidate measured by
// `measure` (once per candidate the rule needs: per-tensor, per-tensor +
// outliers, then for rows > 1 per-channel and, where the rule can take it,
// per-channel + outliers). Both codings measure through it: a whole tensor's
// values (below) and a layer read a chunk of rows at a time (layer_codec.h).
absl::StatusOr<FrontEndChoice> ChooseFrontEnd(int64_t rows,
                                              const MeasureFrontEnd& measure);

// Quantizes `values` (row-major, `shape`) every way and applies the rule. A
// tensor of fewer than two dimensions or one channel is per-tensor. Errors as
// Quantize's (non-finite values).
absl::StatusOr<FrontEndChoice> ChooseFrontEnd(absl::string_view name,
                                              absl::Span<const int64_t> shape,
                                              absl::Span<const float> values);

// The front end a layer policy names: "auto" (nullopt) or a scheme;
// "per-tensor" and "per-channel" are short for the symmetric schemes.
// INVALID_ARGUMENT for anything else.
absl::StatusOr<std::optional<QuantScheme>> FrontEndFromName(
    absl::string_view name);
std::string FrontEndName(
    const std::optional<QuantScheme>& scheme);  // "auto" or the scheme's name

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_FRONT_END_H_
