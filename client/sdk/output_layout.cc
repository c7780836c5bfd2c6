#include "client/sdk/output_layout.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/tensor.h"

namespace weightcast {

absl::StatusOr<std::vector<TensorLayout>> FloatOutputLayout(
    const v1::Manifest& manifest, const ModelInfo& info) {
  std::vector<std::pair<uint32_t, TensorLayout>> indexed;
  for (const v1::ManifestLayer& layer : manifest.layers()) {
    if (layer.is_base()) continue;
    if (layer.tensor_index() >= info.tensor_list.size() ||
        info.tensor_list[layer.tensor_index()].name != layer.name()) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer '", layer.name(),
                       "' is not the described tensor at its index"));
    }
    const TensorDescription& described = info.tensor_list[layer.tensor_index()];
    absl::StatusOr<DType> source = DTypeFromName(described.dtype);
    if (!source.ok()) {
      return absl::FailedPreconditionError(source.status().message());
    }
    DType dtype;
    switch (layer.codec()) {
      case v1::LAYER_CODEC_HEVC:
      case v1::LAYER_CODEC_HEVC_DELTA:
      case v1::LAYER_CODEC_RAW_INT8:
      case v1::LAYER_CODEC_ZSTD_INT8:
      case v1::LAYER_CODEC_FLOAT32:
      case v1::LAYER_CODEC_FLOAT16:
        dtype = DType::kFloat32;
        break;
      case v1::LAYER_CODEC_PASSTHROUGH:
        dtype = *source == DType::kFloat16 || *source == DType::kBFloat16
                    ? DType::kFloat32
                    : *source;
        break;
      default:
        return absl::FailedPreconditionError(
            absl::StrCat("layer '", layer.name(), "': unknown codec"));
    }
    absl::StatusOr<int64_t> elements = CheckedNumElements(
        described.shape, absl::StrCat("tensor '", described.name, "'"));
    if (!elements.ok()) {
      return absl::FailedPreconditionError(elements.status().message());
    }
    const uint64_t size = DTypeSize(dtype);
    if (*elements > kMaxLayerElements) {
      return absl::FailedPreconditionError(
          absl::StrCat("tensor '", described.name, "' is too large"));
    }
    indexed.emplace_back(layer.tensor_index(),
                         TensorLayout{described.name, dtype, described.shape,
                                      static_cast<uint64_t>(*elements) * size});
  }
  std::stable_sort(
      indexed.begin(), indexed.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<TensorLayout> layout;
  layout.reserve(indexed.size());
  for (auto& [index, tensor] : indexed) layout.push_back(std::move(tensor));
  return layout;
}

}  // namespace weightcast
