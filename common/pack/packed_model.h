// A packed model: every tensor of a checkpoint packed at one tier, in
// checkpoint order. File format (docs/FORMAT.md): "WCM1", little-endian uint32
// layer count, then the layers back to back. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_PACKED_MODEL_H_
#define WEIGHTCAST_COMMON_PACK_PACKED_MODEL_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/pack/layer_policy.h"
#include "common/pack/packed_layer.h"
#include "common/pack/tier.h"

namespace weightcast {

inline constexpr uint32_t kMaxLayersPerModel = 1 << 16;

struct PackOptions {
  LayerPolicy policy;
  LayerEncodeOptions base;  // scheme, preset, tile size, threads; codec and QP
                            // come from the tier
  // Optional (Evaluator::InputRms of the model, by weight name): each picture
  // layer named here is coded with column scales from its inputs' RMS
  // (WeighColumns).
  InputRmsMap input_rms;
};

// Packs every tensor of `model` at `tier`. Tensor names must be unique.
// `on_layer` (optional) is called after each layer with the seconds it took to
// encode.
absl::StatusOr<std::vector<PackedLayer>> PackModel(
    const Model& model, const TierSpec& tier, const PackOptions& options,
    const std::function<void(const PackedLayer&, double seconds)>& on_layer =
        nullptr);

// The serialized base layer that a delta layer names by its SHA-256
// (DecodeLayerDelta checks it).
using BaseLookup = std::function<absl::StatusOr<std::vector<uint8_t>>(
    const Sha256Digest& sha256)>;

// Decodes every layer and verifies its SHA-256: int8 layers come back as int8
// with their scales, the others as stored. DATA_LOSS naming the layer on any
// damage. Delta layers need `bases` (FAILED_PRECONDITION without).
absl::StatusOr<std::vector<RebuiltTensor>> DecodeModel(
    const std::vector<PackedLayer>& layers, int threads = 0,
    const BaseLookup& bases = nullptr);

// DecodeModel, then every tensor as float32 (integer buffers untouched).
absl::StatusOr<Model> UnpackModel(const std::vector<PackedLayer>& layers,
                                  int threads = 0,
                                  const BaseLookup& bases = nullptr);

std::vector<uint8_t> SerializePackedModel(
    const std::vector<PackedLayer>& layers);
absl::StatusOr<std::vector<PackedLayer>> ParsePackedModel(
    absl::Span<const uint8_t> bytes);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_PACKED_MODEL_H_
