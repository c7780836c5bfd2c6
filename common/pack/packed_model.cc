#include "common/pack/packed_model.h"

#include <chrono>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/pack/delta_codec.h"

namespace weightcast {
namespace {

constexpr char kMagic[4] = {'W', 'C', 'M', '1'};

}  // namespace

absl::StatusOr<std::vector<PackedLayer>> PackModel(
    const Model& model, const TierSpec& tier, const PackOptions& options,
    const std::function<void(const PackedLayer&, double seconds)>& on_layer) {
  absl::flat_hash_set<std::string> names;
  for (const Tensor& tensor : model.tensors) {
    if (!names.insert(tensor.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor.name, "' appears twice"));
    }
  }
  std::vector<PackedLayer> layers;
  layers.reserve(model.tensors.size());
  for (const Tensor& tensor : model.tensors) {
    const auto start = std::chrono::steady_clock::now();
    LayerEncodeOptions layer_options =
        OptionsFor(tensor, options.policy, tier, options.base);
    WeighColumns(tensor, options.input_rms, &layer_options);
    ASSIGN_OR_RETURN(PackedLayer layer, EncodeLayer(tensor, layer_options));
    if (on_layer) {
      on_layer(layer, std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count());
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

absl::StatusOr<std::vector<RebuiltTensor>> DecodeModel(
    const std::vector<PackedLayer>& layers, int threads,
    const BaseLookup& bases) {
  std::vector<RebuiltTensor> tensors;
  tensors.reserve(layers.size());
  for (const PackedLayer& layer : layers) {
    if (layer.codec == LayerCodec::kHevcDelta && bases) {
      ASSIGN_OR_RETURN(const std::vector<uint8_t> base,
                       bases(layer.base_sha256));
      ASSIGN_OR_RETURN(RebuiltTensor tensor,
                       DecodeLayerDelta(base, layer, threads));
      tensors.push_back(std::move(tensor));
      continue;
    }
    ASSIGN_OR_RETURN(RebuiltTensor tensor, DecodeLayer(layer, threads));
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

absl::StatusOr<Model> UnpackModel(const std::vector<PackedLayer>& layers,
                                  int threads, const BaseLookup& bases) {
  ASSIGN_OR_RETURN(const std::vector<RebuiltTensor> tensors,
                   DecodeModel(layers, threads, bases));
  Model model;
  model.tensors.reserve(tensors.size());
  for (const RebuiltTensor& rebuilt : tensors) {
    ASSIGN_OR_RETURN(Tensor tensor, rebuilt.ToFloatTensor());
    model.tensors.push_back(std::move(tensor));
  }
  return model;
}

std::vector<uint8_t> SerializePackedModel(
    const std::vector<PackedLayer>& layers) {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  const uint32_t count = static_cast<uint32_t>(layers.size());
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<uint8_t>(count >> (8 * i)));
  for (const PackedLayer& layer : layers) {
    const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  return out;
}

absl::StatusOr<std::vector<PackedLayer>> ParsePackedModel(
    absl::Span<const uint8_t> bytes) {
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return absl::InvalidArgumentError(
        "packed model: does not start with the WCM1 magic");
  }
  uint32_t count = 0;
  for (int i = 0; i < 4; ++i)
    count |= static_cast<uint32_t>(bytes[4 + i]) << (8 * i);
  if (count > kMaxLayersPerModel) {
    return absl::InvalidArgumentError(
        absl::StrCat("packed model: ", count, " layers is over the limit"));
  }
  std::vector<PackedLayer> layers;
  size_t offset = 8;
  for (uint32_t i = 0; i < count; ++i) {
    size_t consumed = 0;
    auto layer = ParsePackedLayer(bytes.subspan(offset), &consumed);
    if (!layer.ok()) {
      return absl::Status(layer.status().code(),
                          absl::StrCat("packed model, layer ", i, ": ",
                                       layer.status().message()));
    }
    layers.push_back(std::move(*layer));
    offset += consumed;
  }
  if (offset != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "packed model: ", bytes.size() - offset, " trailing bytes"));
  }
  return layers;
}

}  // namespace weightcast
