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
  const ColumnScales* columns;  // divided out after
};

// Appends `values`, elements [first, first + values.size()) of the layer,
// dequantized (DequantizeRange, outliers over theirs, column scales divided
// out) a slice at a time.
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
    UnscaleColumns(*d.columns, first + static_cast<int64_t>(offset),
                   absl::MakeSpan(slice));
    RETURN_IF_ERROR(out.Append(AsBytes(absl::MakeConstSpan(slice))));
    offset += n;
  }
  return absl::OkStatus();
}

// A multi-tile int8 layer's rows into a float or int8 output.
class BandWriter final : public DecodePool::RowsWriter {
 public:
  BandWriter(CheckpointStreamWriter* writer, OutputKind kind,
             const PackedLayer& layer, int64_t elements, ColumnScales columns,
             CheckpointStreamWriter::Appender values)
      : writer_(writer),
        kind_(kind),
        params_{layer.shape, layer.scheme, {}, layer.scales, layer.zero_points},
        name_(layer.name),
        elements_(elements),
        cols_(layer.grid.cols),
        outliers_(layer.outliers),
        outlier_values_(OutlierFloats(layer.outliers)),
        columns_(std::move(columns)),
        values_(std::move(values)) {
    if (!columns_.empty() && kind_ == OutputKind::kInt8)
      row_scales_.assign(static_cast<size_t>(layer.grid.rows), 1.0f);
  }

  absl::Status Rows(int64_t row0, absl::Span<int8_t> values) override {
    const int64_t first = row0 * cols_;
    const Dequantizer dequantizer{&params_, elements_, outliers_.indices,
                                  outlier_values_, &columns_};
    if (kind_ == OutputKind::kFloat) {
      return AppendDequantized(dequantizer, first, values, values_);
    }
    if (!columns_.empty()) return AppendRequantized(dequantizer, row0, values);
    // The int8 output holds each outlier saturated (AttachOutliers).
    SaturateOutliers(params_, outliers_, elements_, first, values);
    return values_.Append(AsBytes(absl::Span<const int8_t>(values)));
  }

  absl::Status Finish() override {
    RETURN_IF_ERROR(values_.Finish());
    if (kind_ == OutputKind::kFloat) return absl::OkStatus();
    const bool requantized = !columns_.empty();
    const std::vector<int32_t> zeros(row_scales_.size(), 0);
    const std::vector<Int8OutputPart> parts = Int8OutputParts(
        name_, requantized ? QuantScheme::kPerChannelSymmetric : params_.scheme,
        params_.shape);
    const absl::Span<const uint8_t> data[] = {
        {},
        AsBytes(
            absl::MakeConstSpan(requantized ? row_scales_ : params_.scales)),
        AsBytes(
            absl::MakeConstSpan(requantized ? zeros : params_.zero_points))};
    for (size_t i = 1; i < parts.size(); ++i) {
      RETURN_IF_ERROR(writer_->Write(parts[i].name, parts[i].dtype,
                                     parts[i].shape, data[i]));
    }
    return absl::OkStatus();
  }

 private:
  // A layer with column scales into an int8 output: each row's float values
  // quantized again with a scale of its own (RebuiltTensor::Int8Output's
  // per-channel symmetric scales, a row at a time).
  absl::Status AppendRequantized(const Dequantizer& dequantizer, int64_t row0,
                                 absl::Span<const int8_t> values) {
    std::vector<float> row(static_cast<size_t>(cols_));
    for (int64_t r = 0; r * cols_ < static_cast<int64_t>(values.size()); ++r) {
      const int64_t first = (row0 + r) * cols_;
      DequantizeRange(*dequantizer.params, elements_, first,
                      values.subspan(r * cols_, cols_),
                      dequantizer.outlier_indices, dequantizer.outlier_values,
                      absl::MakeSpan(row));
      UnscaleColumns(columns_, first, absl::MakeSpan(row));
      ASSIGN_OR_RETURN(
          const QuantizedTensor q,
          Quantize(name_, {1, cols_}, row, QuantScheme::kPerChannelSymmetric));
      row_scales_.at(static_cast<size_t>(row0 + r)) = q.scales[0];
      RETURN_IF_ERROR(values_.Append(AsBytes(absl::MakeConstSpan(q.values))));
    }
    return absl::OkStatus();
  }

  CheckpointStreamWriter* const writer_;
  const OutputKind kind_;
  const QuantizedTensor params_;  // no values
  const std::string name_;
  const int64_t elements_, cols_;
  const OutlierList outliers_;
  const std::vector<float> outlier_values_;
  const ColumnScales columns_;
  std::vector<float> row_scales_;  // an int8 output of a layer with columns_
  CheckpointStreamWriter::Appender values_;
};

}  // namespace

absl::Status LayerOutput::Write(const RebuiltTensor& tensor) const {
  if (kind_ == OutputKind::kInt8) {
    // An int8 layer as checkpoint.h's Int8OutputParts, other layers as stored.
    if (!tensor.int8) return writer_->Write(tensor.stored);
    QuantizedTensor requantized;  // a layer with column scales only
    const QuantizedTensor* int8 = &*tensor.int8;
    if (!tensor.columns.empty()) {
      ASSIGN_OR_RETURN(requantized, tensor.Int8Output());
      int8 = &requantized;
    }
    ASSIGN_OR_RETURN(const std::vector<Int8OutputPart> parts,
                     Int8OutputParts(tensor.name, *int8));
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
    RETURN_IF_ERROR(AppendDequantized({&q, elements, tensor.outlier_indices,
                                       tensor.outlier_values, &tensor.columns},
                                      0, q.values, out));
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
  ASSIGN_OR_RETURN(ColumnScales columns, ColumnScalesOf(layer));
  const bool float_output = kind_ == OutputKind::kFloat;
  ASSIGN_OR_RETURN(
      CheckpointStreamWriter::Appender values,
      writer_->Begin(layer.name, float_output ? DType::kFloat32 : DType::kInt8,
                     layer.shape,
                     static_cast<uint64_t>(elements) *
                         (float_output ? sizeof(float) : 1)));
  return std::make_unique<BandWriter>(writer_, kind_, layer, elements,
                                      std::move(columns), std::move(values));
}

}  // namespace weightcast
