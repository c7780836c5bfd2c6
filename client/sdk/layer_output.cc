#include "client/sdk/layer_output.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bytes.h"
#include "common/base/status_macros.h"
#include "common/pack/layer_codec.h"
#include "common/pack/outliers.h"

namespace weightcast {
namespace {

// Float values dequantized and written per slice of this many elements (4 MB
// of float32), not a float copy of the whole layer.
constexpr int64_t kDequantizeSliceElements = 1 << 20;

// An int8 layer's scales and outliers, as a float output needs them.
struct Dequantizer {
  const QuantizedTensor* params;              // scales and zero points
  int64_t elements;                           // the layer's
  absl::Span<const int64_t> outlier_indices;  // increasing
  absl::Span<const float> outlier_values;
};

// Appends `values`, elements [first, first + values.size()) of the layer,
// dequantized (DequantizeRange, outliers over theirs) a slice at a time.
absl::Status AppendDequantized(const Dequantizer& d, int64_t first,
                               absl::Span<const int8_t> values,
                               CheckpointStreamWriter::Appender& out) {
  std::vector<float> slice;
  for (size_t offset = 0; offset < values.size();) {
    const size_t n =
        std::min<size_t>(values.size() - offset, kDequantizeSliceElements);
    slice.resize(n);
    DequantizeRange(*d.params, d.elements, first + static_cast<int64_t>(offset),
                    values.subspan(offset, n), d.outlier_indices,
                    d.outlier_values, absl::MakeSpan(slice));
    RETURN_IF_ERROR(out.Append(AsBytes(absl::MakeConstSpan(slice))));
    offset += n;
  }
  return absl::OkStatus();
}

// A multi-tile int8 layer's rows into a float or int8 output.
class BandWriter final : public DecodePool::RowsWriter {
 public:
  BandWriter(CheckpointStreamWriter* writer, OutputKind kind,
             const PackedLayer& layer, int64_t elements,
             CheckpointStreamWriter::Appender values)
      : writer_(writer),
        kind_(kind),
        params_{layer.shape, layer.scheme, {}, layer.scales, layer.zero_points},
        name_(layer.name),
        elements_(elements),
        cols_(layer.grid.cols),
        outliers_(layer.outliers),
        outlier_values_(OutlierFloats(layer.outliers)),
        values_(std::move(values)) {}

  absl::Status Rows(int64_t row0, absl::Span<int8_t> values) override {
    const int64_t first = row0 * cols_;
    if (kind_ == OutputKind::kFloat) {
      return AppendDequantized(
          {&params_, elements_, outliers_.indices, outlier_values_}, first,
          values, values_);
    }
    // The int8 output holds each outlier saturated (AttachOutliers).
    SaturateOutliers(params_, outliers_, elements_, first, values);
    return values_.Append(AsBytes(absl::Span<const int8_t>(values)));
  }

  absl::Status Finish() override {
    RETURN_IF_ERROR(values_.Finish());
    if (kind_ == OutputKind::kFloat) return absl::OkStatus();
    const std::vector<Int8OutputPart> parts =
        Int8OutputParts(name_, params_.scheme, params_.shape);
    const absl::Span<const uint8_t> data[] = {
        {},
        AsBytes(absl::MakeConstSpan(params_.scales)),
        AsBytes(absl::MakeConstSpan(params_.zero_points))};
    for (size_t i = 1; i < parts.size(); ++i) {
      RETURN_IF_ERROR(writer_->Write(parts[i].name, parts[i].dtype,
                                     parts[i].shape, data[i]));
    }
    return absl::OkStatus();
  }

 private:
  CheckpointStreamWriter* const writer_;
  const OutputKind kind_;
  const QuantizedTensor params_;  // no values
  const std::string name_;
  const int64_t elements_, cols_;
  const OutlierList outliers_;
  const std::vector<float> outlier_values_;
  CheckpointStreamWriter::Appender values_;
};

}  // namespace

absl::Status LayerOutput::Write(const RebuiltTensor& tensor) const {
  if (kind_ == OutputKind::kInt8) {
    // An int8 layer as checkpoint.h's Int8OutputParts, other layers as stored.
    if (!tensor.int8) return writer_->Write(tensor.stored);
    ASSIGN_OR_RETURN(const std::vector<Int8OutputPart> parts,
                     Int8OutputParts(tensor.name, *tensor.int8));
    for (const Int8OutputPart& part : parts) {
      RETURN_IF_ERROR(
          writer_->Write(part.name, part.dtype, part.shape, part.data));
    }
    return absl::OkStatus();
  }
  if (tensor.int8) {
    const QuantizedTensor& q = *tensor.int8;
    if (q.zero_points.size() < q.scales.size()) {
      return absl::DataLossError(
          absl::StrCat("layer '", tensor.name, "': zero points do not fit"));
    }
    const int64_t elements = static_cast<int64_t>(q.values.size());
    ASSIGN_OR_RETURN(
        CheckpointStreamWriter::Appender out,
        writer_->Begin(tensor.name, DType::kFloat32, tensor.shape,
                       static_cast<uint64_t>(elements) * sizeof(float)));
    RETURN_IF_ERROR(AppendDequantized(
        {&q, elements, tensor.outlier_indices, tensor.outlier_values}, 0,
        q.values, out));
    return out.Finish();
  }
  if (tensor.stored.dtype == DType::kFloat16 ||
      tensor.stored.dtype == DType::kBFloat16) {
    ASSIGN_OR_RETURN(const Tensor widened, tensor.ToFloatTensor());
    return writer_->Write(widened);
  }
  return writer_->Write(tensor.stored);
}

absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> LayerOutput::BeginRows(
    const PackedLayer& layer) const {
  ASSIGN_OR_RETURN(const int64_t elements,
                   CheckedNumElements(
                       layer.shape, absl::StrCat("layer '", layer.name, "'")));
  if (layer.zero_points.size() < layer.scales.size()) {
    return absl::DataLossError(
        absl::StrCat("layer '", layer.name, "': zero points do not fit"));
  }
  RETURN_IF_ERROR(CheckOutliersFit(layer, elements));
  const bool float_output = kind_ == OutputKind::kFloat;
  ASSIGN_OR_RETURN(
      CheckpointStreamWriter::Appender values,
      writer_->Begin(layer.name, float_output ? DType::kFloat32 : DType::kInt8,
                     layer.shape,
                     static_cast<uint64_t>(elements) *
                         (float_output ? sizeof(float) : 1)));
  return std::make_unique<BandWriter>(writer_, kind_, layer, elements,
                                      std::move(values));
}

}  // namespace weightcast
