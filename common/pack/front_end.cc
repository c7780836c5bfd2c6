#include "common/pack/front_end.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/tensor/fidelity.h"

namespace weightcast {

bool PerChannelWins(double per_tensor_channel_sqnr_db,
                    double per_channel_channel_sqnr_db) {
  return per_tensor_channel_sqnr_db < kTransparentInt8SqnrDb &&
         per_channel_channel_sqnr_db >
             per_tensor_channel_sqnr_db + kPerChannelMinGainDb;
}

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
  if (rows <= 1) return choice;
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
