#include "client/sdk/output_layout.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {
namespace {

bool IsInt8(v1::LayerCodec codec) {
  return codec == v1::LAYER_CODEC_HEVC || codec == v1::LAYER_CODEC_HEVC_DELTA ||
         codec == v1::LAYER_CODEC_RAW_INT8 ||
         codec == v1::LAYER_CODEC_ZSTD_INT8;
}

// The dtype a layer of `codec` is written as when it is not written as int8:
// float32 for every float output and float32 codec, float16 for a float16
// codec kept as stored, the source dtype of passthrough (widened to float32
// for a float output, as ToFloatTensor does).
absl::StatusOr<DType> WrittenDType(const v1::ManifestLayer& layer, DType source,
                                   OutputKind kind) {
  switch (layer.codec()) {
    case v1::LAYER_CODEC_HEVC:
    case v1::LAYER_CODEC_HEVC_DELTA:
    case v1::LAYER_CODEC_RAW_INT8:
    case v1::LAYER_CODEC_ZSTD_INT8:
    case v1::LAYER_CODEC_FLOAT32:
      return DType::kFloat32;
    case v1::LAYER_CODEC_FLOAT16:
      return kind == OutputKind::kFloat ? DType::kFloat32 : DType::kFloat16;
    case v1::LAYER_CODEC_PASSTHROUGH:
      return kind == OutputKind::kFloat &&
                     (source == DType::kFloat16 || source == DType::kBFloat16)
                 ? DType::kFloat32
                 : source;
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("layer '", layer.name(), "': unknown codec"));
  }
}

TensorLayout Layout(std::string name, DType dtype, std::vector<int64_t> shape,
                    int64_t elements) {
  const uint64_t bytes = static_cast<uint64_t>(elements) * DTypeSize(dtype);
  return TensorLayout{std::move(name), dtype, std::move(shape), bytes};
}

// The tensors one layer is written as, in file order (OutputTensors' rule).
absl::Status AppendLayer(const v1::ManifestLayer& layer,
                         const TensorDescription& described, OutputKind kind,
                         std::vector<TensorLayout>* out) {
  absl::StatusOr<DType> source = DTypeFromName(described.dtype);
  if (!source.ok())
    return absl::FailedPreconditionError(source.status().message());
  absl::StatusOr<int64_t> elements = CheckedNumElements(
      described.shape, absl::StrCat("tensor '", described.name, "'"));
  if (!elements.ok()) {
    return absl::FailedPreconditionError(elements.status().message());
  }
  if (*elements > kMaxLayerElements) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor '", described.name, "' is too large"));
  }
  if (kind == OutputKind::kFloat || !IsInt8(layer.codec())) {
    ASSIGN_OR_RETURN(const DType dtype, WrittenDType(layer, *source, kind));
    out->push_back(Layout(described.name, dtype, described.shape, *elements));
    return absl::OkStatus();
  }
  if (layer.quant_scheme() < v1::QUANT_SCHEME_PER_TENSOR_SYMMETRIC ||
      layer.quant_scheme() > v1::QUANT_SCHEME_PER_CHANNEL_ASYMMETRIC) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer '", layer.name(),
                     "': the manifest gives no quantization scheme"));
  }
  const auto scheme = static_cast<QuantScheme>(layer.quant_scheme() - 1);
  for (Int8OutputPart& part :
       Int8OutputParts(described.name, scheme, described.shape)) {
    const int64_t count =
        part.dtype == DType::kInt8 ? *elements : part.shape[0];
    out->push_back(
        Layout(std::move(part.name), part.dtype, std::move(part.shape), count));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TensorLayout>> OutputLayout(
    const v1::Manifest& manifest, const ModelInfo& info, OutputKind kind) {
  std::vector<std::pair<uint32_t, const v1::ManifestLayer*>> indexed;
  for (const v1::ManifestLayer& layer : manifest.layers()) {
    if (layer.is_base()) continue;
    if (layer.tensor_index() >= info.tensor_list.size() ||
        info.tensor_list[layer.tensor_index()].name != layer.name()) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer '", layer.name(),
                       "' is not the described tensor at its index"));
    }
    indexed.emplace_back(layer.tensor_index(), &layer);
  }
  std::stable_sort(
      indexed.begin(), indexed.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<TensorLayout> layout;
  layout.reserve(indexed.size());
  for (const auto& [index, layer] : indexed) {
    RETURN_IF_ERROR(
        AppendLayer(*layer, info.tensor_list[index], kind, &layout));
  }
  return layout;
}

}  // namespace weightcast
