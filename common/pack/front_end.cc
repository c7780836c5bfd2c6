#include "common/pack/front_end.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace weightcast {

bool PerChannelWins(const Fidelity& per_tensor, const Fidelity& per_channel) {
  if (std::isinf(per_tensor.channel_sqnr_db) && per_tensor.channel_sqnr_db > 0) return false;  // exact already
  return per_channel.channel_sqnr_db > per_tensor.channel_sqnr_db + kPerChannelMinGainDb;
}

bool PerChannelMayWin(absl::Span<const int64_t> shape, absl::Span<const float> values) {
  if (shape.size() < 2 || shape[0] <= 1 || values.empty()) return false;
  const size_t rows = static_cast<size_t>(shape[0]);
  if (values.size() % rows != 0) return false;
  const size_t cols = values.size() / rows;
  float tensor_max = 0, smallest_row_max = INFINITY;
  for (size_t r = 0; r < rows; ++r) {
    float row_max = 0;
    for (size_t i = r * cols; i < (r + 1) * cols; ++i) row_max = std::max(row_max, std::abs(values[i]));
    tensor_max = std::max(tensor_max, row_max);
    if (row_max > 0) smallest_row_max = std::min(smallest_row_max, row_max);
  }
  return tensor_max > 2.0f * smallest_row_max;
}

absl::StatusOr<std::optional<QuantScheme>> FrontEndFromName(absl::string_view name) {
  if (name == "auto") return std::nullopt;
  if (name == "per-tensor") return QuantScheme::kPerTensorSymmetric;
  if (name == "per-channel") return QuantScheme::kPerChannelSymmetric;
  auto scheme = QuantSchemeFromName(name);
  if (!scheme.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown quantization front end '", name, "' (auto, per-tensor, per-channel or a scheme name)"));
  }
  return *scheme;
}

std::string FrontEndName(const std::optional<QuantScheme>& scheme) {
  return scheme ? std::string(QuantSchemeName(*scheme)) : std::string("auto");
}

}  // namespace weightcast
