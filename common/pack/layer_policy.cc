#include "common/pack/layer_policy.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/pack/front_end.h"

namespace weightcast {
namespace {

using Json = nlohmann::json;

constexpr std::pair<LayerClass, absl::string_view> kClassNames[] = {
    {LayerClass::kPicture, "picture"},
    {LayerClass::kInt8, "int8"},
    {LayerClass::kFloat, "float"},
    {LayerClass::kPassthrough, "passthrough"},
};

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("layer policy: ", field, ": ", what));
}

bool Matches(absl::string_view pattern, absl::string_view name) {
  if (absl::EndsWith(pattern, "*"))
    return absl::StartsWith(name, pattern.substr(0, pattern.size() - 1));
  return pattern == name;
}

bool IsConvolution(const Tensor& tensor) { return tensor.shape.size() >= 3; }

// The policy's mosaic for `tensor` in `options`: the one it names when that
// fits its matrix, or for "auto" (an empty Mosaic) the encoder's to find.
void SetMosaic(const Tensor& tensor, const LayerPolicy& policy,
               LayerEncodeOptions& options) {
  for (const auto& [pattern, mosaic] : policy.mosaics) {
    if (!Matches(pattern, tensor.name)) continue;
    const auto [rows, cols] = MatrixView(tensor.shape);
    options.find_mosaic = mosaic.empty();
    if (PlanMosaic(rows, cols, mosaic).ok()) options.mosaic = mosaic;
    return;
  }
}

}  // namespace

absl::string_view LayerClassName(LayerClass layer_class) {
  for (const auto& [c, name] : kClassNames) {
    if (c == layer_class) return name;
  }
  return "unknown";
}

absl::StatusOr<LayerPolicy> ParseLayerPolicy(absl::string_view text) {
  if (absl::StripAsciiWhitespace(text).empty()) return LayerPolicy{};
  const Json json = Json::parse(text.begin(), text.end(), nullptr,
                                /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object())
    return Invalid("file", "not a JSON object");
  LayerPolicy policy;
  for (auto it = json.begin(); it != json.end(); ++it) {
    const std::string& key = it.key();
    const Json& value = it.value();
    if (key == "min_picture_elements") {
      if (!value.is_number_unsigned() || value.get<uint64_t>() < 1 ||
          value.get<uint64_t>() > (1ull << 40)) {
        return Invalid(key, "must be a positive integer");
      }
      policy.min_picture_elements = static_cast<int64_t>(value.get<uint64_t>());
    } else if (key == "convolutions") {
      if (!value.is_string() || (value != "int8" && value != "picture")) {
        return Invalid(key, "must be \"int8\" or \"picture\"");
      }
      policy.convolutions_as_pictures = value == "picture";
    } else if (key == "convolution_qp") {
      if (!value.is_number_unsigned() || value.get<uint64_t>() > 51)
        return Invalid(key, "must be a QP in 0..51");
      policy.convolution_qp = static_cast<int>(value.get<uint64_t>());
    } else if (key == "scheme") {
      if (!value.is_string())
        return Invalid(key,
                       "must be \"auto\", \"per-tensor\" or \"per-channel\"");
      auto scheme = FrontEndFromName(value.get<std::string>());
      if (!scheme.ok()) return Invalid(key, scheme.status().message());
      policy.scheme = *scheme;
    } else if (key == "overrides") {
      if (!value.is_object())
        return Invalid(key, "must map tensor names to classes");
      for (auto o = value.begin(); o != value.end(); ++o) {
        std::optional<LayerClass> layer_class;
        for (const auto& [c, name] : kClassNames) {
          if (o.value().is_string() && o.value() == std::string(name))
            layer_class = c;
        }
        if (!layer_class)
          return Invalid(absl::StrCat(key, ".", o.key()),
                         "must be picture, int8, float or passthrough");
        policy.overrides.emplace_back(o.key(), *layer_class);
      }
    } else if (key == "mosaics") {
      if (!value.is_object())
        return Invalid(key,
                       "must map tensor names to [block rows, block cols]");
      for (auto o = value.begin(); o != value.end(); ++o) {
        const Json& sides = o.value();
        if (sides.is_string() && sides.get<std::string>() == "auto") {
          policy.mosaics.emplace_back(o.key(), Mosaic());  // found (mosaic.h)
          continue;
        }
        const auto side_ok = [](const Json& side) {
          return side.is_number_unsigned() && side.get<uint64_t>() >= 2 &&
                 side.get<uint64_t>() <=
                     static_cast<uint64_t>(kMaxMosaicBlockSide);
        };
        if (!sides.is_array() || sides.size() != 2 || !side_ok(sides[0]) ||
            !side_ok(sides[1])) {
          return Invalid(absl::StrCat(key, ".", o.key()),
                         absl::StrCat("must be [block rows, block cols], each "
                                      "in 2..",
                                      kMaxMosaicBlockSide, ", or \"auto\""));
        }
        policy.mosaics.emplace_back(
            o.key(), Mosaic{static_cast<int64_t>(sides[0].get<uint64_t>()),
                            static_cast<int64_t>(sides[1].get<uint64_t>())});
      }
    } else {
      return Invalid(key, "unknown field");
    }
  }
  if (policy.convolution_qp && !policy.convolutions_as_pictures) {
    return Invalid("convolution_qp", "needs \"convolutions\": \"picture\"");
  }
  return policy;
}

std::string DescribeLayerPolicy(const LayerPolicy& policy) {
  std::string convs =
      policy.convolutions_as_pictures
          ? (policy.convolution_qp
                 ? absl::StrCat("picture at QP ", *policy.convolution_qp)
                 : std::string("picture at the tier's QP"))
          : std::string("int8 + zstd");
  std::string text = absl::StrCat(
      "2-D weights with >= ", policy.min_picture_elements,
      " elements -> picture (HEVC at the tier's QP); convolutions -> ", convs,
      "; other weights -> int8 + zstd; 1-D -> float32; integer buffers -> "
      "passthrough",
      policy.scheme
          ? absl::StrCat("; int8 scales ", QuantSchemeName(*policy.scheme))
          : std::string("; int8 scales per-tensor, or per-channel where "
                        "that repairs a layer (auto), the largest weights as a "
                        "float16 side list where that does"));
  for (const auto& [pattern, layer_class] : policy.overrides) {
    absl::StrAppend(&text, "; ", pattern, " -> ", LayerClassName(layer_class));
  }
  for (const auto& [pattern, mosaic] : policy.mosaics) {
    if (mosaic.empty()) {
      absl::StrAppend(&text, "; ", pattern,
                      " -> a mosaic where the weights show one");
    } else {
      absl::StrAppend(&text, "; ", pattern, " -> mosaic of ", mosaic.block_rows,
                      "x", mosaic.block_cols, " blocks");
    }
  }
  return text;
}

LayerClass ClassifyTensor(const Tensor& tensor, const LayerPolicy& policy) {
  for (const auto& [pattern, layer_class] : policy.overrides) {
    if (Matches(pattern, tensor.name)) return layer_class;
  }
  if (!IsFloatingPoint(tensor.dtype)) return LayerClass::kPassthrough;
  if (tensor.shape.size() <= 1) return LayerClass::kFloat;
  const bool large = tensor.NumElements() >= policy.min_picture_elements;
  if (!IsConvolution(tensor))
    return large ? LayerClass::kPicture : LayerClass::kInt8;
  return large && policy.convolutions_as_pictures ? LayerClass::kPicture
                                                  : LayerClass::kInt8;
}

bool FollowsTierQp(const Tensor& tensor, const LayerPolicy& policy,
                   const TierSpec& tier) {
  const LayerEncodeOptions options = OptionsFor(tensor, policy, tier, {});
  return options.codec == LayerCodec::kHevc && !options.hevc.lossless &&
         !(IsConvolution(tensor) && policy.convolution_qp);
}

LayerEncodeOptions OptionsFor(const Tensor& tensor, const LayerPolicy& policy,
                              const TierSpec& tier, LayerEncodeOptions base) {
  switch (ClassifyTensor(tensor, policy)) {
    case LayerClass::kPicture:
      base.codec = tier.picture_codec;
      base.hevc.qp = tier.qp;
      base.hevc.lossless = tier.lossless;
      if (IsConvolution(tensor) && policy.convolution_qp &&
          tier.picture_codec == LayerCodec::kHevc && !tier.lossless) {
        base.hevc.qp = *policy.convolution_qp;
      }
      if (tensor.NumElements() == 0)
        base.codec = LayerCodec::kZstdInt8;  // nothing to picture
      if (base.codec == LayerCodec::kHevc) SetMosaic(tensor, policy, base);
      break;
    case LayerClass::kInt8:
      base.codec = LayerCodec::kZstdInt8;
      break;
    case LayerClass::kFloat:
      base.codec = tier.float_codec;
      break;
    case LayerClass::kPassthrough:
      base.codec = LayerCodec::kPassthrough;
      break;
  }
  if (!IsFloatingPoint(tensor.dtype) && IsInt8Codec(base.codec))
    base.codec = LayerCodec::kPassthrough;
  base.scheme = policy.scheme.value_or(QuantScheme::kPerTensorSymmetric);
  base.choose_scheme = !policy.scheme.has_value();
  return base;
}

}  // namespace weightcast
