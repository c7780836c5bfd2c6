#include "common/pack/front_end.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/pack/outliers.h"
#include "common/tensor/fidelity.h"

namespace weightcast {

bool PerChannelWins(double per_tensor_channel_sqnr_db,
                    double per_channel_channel_sqnr_db) {
  return per_tensor_channel_sqnr_db < kTransparentInt8SqnrDb &&
         per_channel_channel_sqnr_db >
             per_tensor_channel_sqnr_db + kPerChannelMinGainDb;
}

std::optional<QuantScheme> OutliersWin(QuantScheme pick,
                                       const FrontEndChoice& measured,
                                       bool per_tensor_candidate,
                                       bool per_channel_candidate) {
  const double pt = measured.per_tensor_channel_sqnr_db;
  const bool transparent = pt >= kTransparentInt8SqnrDb;
  const double pt_outliers = measured.per_tensor_outliers_channel_sqnr_db;
  const double pc_outliers = measured.per_channel_outliers_channel_sqnr_db;
  if (per_tensor_candidate && pt_outliers >= kTransparentInt8SqnrDb &&
      pt_outliers > pt + (transparent ? kOutliersMinGainOnTransparentDb
                                      : kPerChannelMinGainDb)) {
    return per_channel_candidate &&
                   pc_outliers > pt_outliers + kPerChannelMinGainDb
               ? QuantScheme::kPerChannelSymmetric
               : QuantScheme::kPerTensorSymmetric;
  }
  if (transparent) return std::nullopt;
  const bool per_channel = pick == QuantScheme::kPerChannelSymmetric;
  const double without =
      per_channel ? measured.per_channel_channel_sqnr_db : pt;
  const double with = per_channel ? pc_outliers : pt_outliers;
  if ((per_channel ? per_channel_candidate : per_tensor_candidate) &&
      without < kTransparentInt8SqnrDb &&
      with > without + kPerChannelMinGainDb) {
    return pick;
  }
  return std::nullopt;
}

namespace {

// The int8 channel SQNR of `scheme` + outliers, and the outlier count (0 when
// none: then no candidate).
absl::StatusOr<std::pair<double, int64_t>> OutlierCandidate(
    absl::string_view name, absl::Span<const int64_t> shape,
    absl::Span<const float> values, QuantScheme scheme) {
  const OutlierList outliers =
      FindOutliers(shape, values, scheme == QuantScheme::kPerChannelSymmetric);
  if (outliers.empty()) return std::make_pair(0.0, int64_t{0});
  ASSIGN_OR_RETURN(
      const QuantizedTensor q,
      QuantizeWithoutOutliers(name, shape, values, scheme, outliers));
  return std::make_pair(
      MeasureFidelityWithOutliers(values, q, q.values, outliers, 0)
          .channel_sqnr_db,
      static_cast<int64_t>(outliers.indices.size()));
}

}  // namespace

absl::StatusOr<FrontEndChoice> ChooseFrontEnd(absl::string_view name,
                                              absl::Span<const int64_t> shape,
                                              absl::Span<const float> values) {
  FrontEndChoice choice;
  const int64_t rows = shape.size() >= 2 ? shape[0] : 1;
  // MeasureFidelity's channel SQNR is ChannelSqnrDb(values, Dequantize(q),
  // rows) bit for bit, without a float copy of the layer; each quantization is
  // freed before the next.
  {
    ASSIGN_OR_RETURN(
        const QuantizedTensor per_tensor,
        Quantize(name, shape, values, QuantScheme::kPerTensorSymmetric));
    choice.per_tensor_channel_sqnr_db = choice.per_channel_channel_sqnr_db =
        MeasureFidelity(values, per_tensor, per_tensor.values, 0)
            .channel_sqnr_db;
  }
  {
    ASSIGN_OR_RETURN(const auto candidate,
                     OutlierCandidate(name, shape, values,
                                      QuantScheme::kPerTensorSymmetric));
    choice.per_tensor_outliers_channel_sqnr_db = candidate.first;
    choice.per_tensor_outliers = candidate.second;
  }
  // Per-channel outlier candidates only where the rule can take one.
  const bool look_for_outliers =
      choice.per_tensor_channel_sqnr_db < kTransparentInt8SqnrDb ||
      choice.per_tensor_outliers > 0;
  if (rows <= 1) {
    if (const auto win = OutliersWin(choice.scheme, choice,
                                     choice.per_tensor_outliers > 0, false)) {
      choice.scheme = *win;
      choice.outliers = true;
    }
    return choice;
  }
  {
    ASSIGN_OR_RETURN(
        const QuantizedTensor per_channel,
        Quantize(name, shape, values, QuantScheme::kPerChannelSymmetric));
    choice.per_channel_channel_sqnr_db =
        MeasureFidelity(values, per_channel, per_channel.values, 0)
            .channel_sqnr_db;
  }
  if (PerChannelWins(choice.per_tensor_channel_sqnr_db,
                     choice.per_channel_channel_sqnr_db)) {
    choice.scheme = QuantScheme::kPerChannelSymmetric;
  }
  if (look_for_outliers) {
    ASSIGN_OR_RETURN(const auto candidate,
                     OutlierCandidate(name, shape, values,
                                      QuantScheme::kPerChannelSymmetric));
    choice.per_channel_outliers_channel_sqnr_db = candidate.first;
    choice.per_channel_outliers = candidate.second;
    if (const auto win =
            OutliersWin(choice.scheme, choice, choice.per_tensor_outliers > 0,
                        choice.per_channel_outliers > 0)) {
      choice.scheme = *win;
      choice.outliers = true;
    }
  }
  return choice;
}

absl::StatusOr<std::optional<QuantScheme>> FrontEndFromName(
    absl::string_view name) {
  if (name == "auto") return std::nullopt;
  if (name == "per-tensor") return QuantScheme::kPerTensorSymmetric;
  if (name == "per-channel") return QuantScheme::kPerChannelSymmetric;
  auto scheme = QuantSchemeFromName(name);
  if (!scheme.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown quantization front end '", name,
                     "' (auto, per-tensor, per-channel or a scheme name)"));
  }
  return *scheme;
}

std::string FrontEndName(const std::optional<QuantScheme>& scheme) {
  return scheme ? std::string(QuantSchemeName(*scheme)) : std::string("auto");
}

}  // namespace weightcast
