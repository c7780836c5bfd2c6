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

absl::StatusOr<FrontEndChoice> ChooseFrontEnd(int64_t rows,
                                              const MeasureFrontEnd& measure) {
  FrontEndChoice choice;
  {
    ASSIGN_OR_RETURN(const FrontEndMeasure per_tensor,
                     measure(QuantScheme::kPerTensorSymmetric, false));
    choice.per_tensor_channel_sqnr_db = choice.per_channel_channel_sqnr_db =
        per_tensor.channel_sqnr_db;
    ASSIGN_OR_RETURN(const FrontEndMeasure candidate,
                     measure(QuantScheme::kPerTensorSymmetric, true));
    choice.per_tensor_outliers_channel_sqnr_db = candidate.channel_sqnr_db;
    choice.per_tensor_outliers = candidate.outliers;
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
  ASSIGN_OR_RETURN(const FrontEndMeasure per_channel,
                   measure(QuantScheme::kPerChannelSymmetric, false));
  choice.per_channel_channel_sqnr_db = per_channel.channel_sqnr_db;
  if (PerChannelWins(choice.per_tensor_channel_sqnr_db,
                     choice.per_channel_channel_sqnr_db)) {
    choice.scheme = QuantScheme::kPerChannelSymmetric;
  }
  if (look_for_outliers) {
    ASSIGN_OR_RETURN(const FrontEndMeasure candidate,
                     measure(QuantScheme::kPerChannelSymmetric, true));
    choice.per_channel_outliers_channel_sqnr_db = candidate.channel_sqnr_db;
    choice.per_channel_outliers = candidate.outliers;
    if (const auto win =
            OutliersWin(choice.scheme, choice, choice.per_tensor_outliers > 0,
                        choice.per_channel_outliers > 0)) {
      choice.scheme = *win;
      choice.outliers = true;
    }
  }
  return choice;
}

absl::StatusOr<FrontEndChoice> ChooseFrontEnd(absl::string_view name,
                                              absl::Span<const int64_t> shape,
                                              absl::Span<const float> values) {
  // MeasureFidelity's channel SQNR is ChannelSqnrDb(values, Dequantize(q),
  // rows) bit for bit, without a float copy of the layer; each quantization is
  // freed before the next.
  return ChooseFrontEnd(
      shape.size() >= 2 ? shape[0] : 1,
      [&](QuantScheme scheme,
          bool with_outliers) -> absl::StatusOr<FrontEndMeasure> {
        if (!with_outliers) {
          ASSIGN_OR_RETURN(const QuantizedTensor q,
                           Quantize(name, shape, values, scheme));
          return FrontEndMeasure{
              MeasureFidelity(values, q, q.values, 0).channel_sqnr_db, 0};
        }
        const OutlierList outliers = FindOutliers(
            shape, values, scheme == QuantScheme::kPerChannelSymmetric);
        if (outliers.empty()) return FrontEndMeasure{};
        ASSIGN_OR_RETURN(
            const QuantizedTensor q,
            QuantizeWithoutOutliers(name, shape, values, scheme, outliers));
        return FrontEndMeasure{
            MeasureFidelityWithOutliers(values, q, q.values, outliers, 0)
                .channel_sqnr_db,
            static_cast<int64_t>(outliers.indices.size())};
      });
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
