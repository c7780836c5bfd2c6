// Tiers and the layer policy: which codec each tensor of a model gets at a given tier.
// A tier is a named recipe ("q27": picture layers as HEVC at QP 27; "lossless": int8 + zstd).
// The policy sorts tensors into picture layers, int8 layers, float layers and pass-through
// buffers. Plain values and pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_TIER_H_
#define WEIGHTCAST_COMMON_PACK_TIER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pack/layer_codec.h"

namespace weightcast {

struct TierSpec {
  std::string name;
  LayerCodec picture_codec = LayerCodec::kHevc;  // what picture layers get at this tier
  int qp = 0;                                    // HEVC tiers
  bool lossless = false;                         // HEVC lossless tier
};

inline constexpr char kDefaultTierLadder[] = "lossless,q22,q27,q32,q37";

// "qNN" (HEVC at QP NN, 0..51), "hevc-lossless", "lossless" (int8 + zstd), "int8" (raw int8).
absl::StatusOr<TierSpec> ParseTier(absl::string_view name);
// A comma-separated list of tier names; names must not repeat.
absl::StatusOr<std::vector<TierSpec>> ParseTierList(absl::string_view list);

enum class LayerClass {
  kPicture,      // large 2-D weights: coded as pictures at the tier's QP
  kInt8,         // other weights (convolutions by default): int8 + zstd, identical in every tier
  kFloat,        // 1-D tensors (biases, norms): float32
  kPassthrough,  // integer buffers (num_batches_tracked): untouched
};

absl::string_view LayerClassName(LayerClass layer_class);

struct LayerPolicy {
  int64_t min_picture_elements = 4096;  // 2-D weights at least this large become pictures
  bool convolutions_as_pictures = false;  // the seed paper keeps convs int8: they are sensitive
};

LayerClass ClassifyTensor(const Tensor& tensor, const LayerPolicy& policy);

// The encode options for a tensor of `layer_class` at `tier`.
LayerEncodeOptions OptionsFor(LayerClass layer_class, const TierSpec& tier, LayerEncodeOptions base);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_TIER_H_
