// The layer policy: which codec each tensor gets, as data an operator can set
// (a JSON file). By default 2-D weights with at least 4096 elements are
// pictures (HEVC at the tier's QP), convolution weights stay int8 + zstd (the
// seed paper found them sensitive), 1-D tensors stay float32 and integer
// buffers pass through untouched. Plain values; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_LAYER_POLICY_H_
#define WEIGHTCAST_COMMON_PACK_LAYER_POLICY_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pack/layer_codec.h"
#include "common/pack/tier.h"

namespace weightcast {

enum class LayerClass {
  kPicture,      // coded as pictures at the tier's codec and QP
  kInt8,         // int8 + zstd, identical in every tier
  kFloat,        // float32
  kPassthrough,  // the original bytes (integer buffers)
};

absl::string_view LayerClassName(
    LayerClass layer_class);  // "picture", "int8", "float", "passthrough"

struct LayerPolicy {
  int64_t min_picture_elements =
      4096;  // 2-D weights at least this large are pictures
  bool convolutions_as_pictures = false;
  // When set, convolution pictures are coded at this QP in every HEVC tier
  // (their own QP), instead of the tier's.
  std::optional<int> convolution_qp;
  // The int8 quantization front end of every int8-coded layer: a scheme, or
  // nullopt (the default, "auto"): per layer, per-tensor or per-channel
  // symmetric by front_end.h's rule.
  std::optional<QuantScheme> scheme;
  // Exact tensor names, or prefixes ending in '*', mapped to a class; the first
  // match wins.
  std::vector<std::pair<std::string, LayerClass>> overrides;
  // Exact tensor names, or prefixes ending in '*', mapped to the mosaic
  // layout (mosaic.h) of their HEVC pictures, when it fits the tensor's
  // matrix view (a layer it does not fit is coded as its matrix); the first
  // match wins. E.g. an MLP whose first layer reads 28x28 images:
  // {"fc1.weight": [28, 28]}. An empty Mosaic ("auto" in the file): the one
  // mosaic.h's FindMosaic sees in the layer's weights, if any.
  std::vector<std::pair<std::string, Mosaic>> mosaics;
};

// Parses a policy file:
//   {"min_picture_elements": 4096, "convolutions": "int8" | "picture",
//   "convolution_qp": 22,
//    "scheme": "auto" | "per-tensor" | "per-channel" | a scheme name
//    (quantize.h), "overrides": {"classifier.weight": "int8", "features.*":
//    "picture"}, "mosaics": {"fc1.weight": [28, 28], "*": "auto"}}
// Every field is optional; empty text is the default policy. INVALID_ARGUMENT
// naming the field for anything else.
absl::StatusOr<LayerPolicy> ParseLayerPolicy(absl::string_view json);

// One line describing the policy, for --explain.
std::string DescribeLayerPolicy(const LayerPolicy& policy);

LayerClass ClassifyTensor(const Tensor& tensor, const LayerPolicy& policy);

// True when `tensor` is coded by lossy HEVC at the tier's QP (not at a
// convolution QP of its own): the layers a budget tier gives a QP each.
bool FollowsTierQp(const Tensor& tensor, const LayerPolicy& policy,
                   const TierSpec& tier);

// The encode options for `tensor` at `tier`: `base` with codec, QP and front
// end filled in.
LayerEncodeOptions OptionsFor(const Tensor& tensor, const LayerPolicy& policy,
                              const TierSpec& tier, LayerEncodeOptions base);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_LAYER_POLICY_H_
