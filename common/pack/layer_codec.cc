#include "common/pack/layer_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/parallel_for.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/hevc/de265_decoder.h"
#include "common/pack/front_end.h"
#include "common/pack/outliers.h"
#include "common/pack/zstd_codec.h"
#include "common/tensor/fidelity.h"

namespace weightcast {
namespace {

absl::Span<const uint8_t> AsBytes(absl::Span<const int8_t> values) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(values.data()),
                             values.size());
}

absl::Status Annotate(const absl::Status& status, absl::string_view layer) {
  return absl::Status(status.code(),
                      absl::StrCat("layer '", layer, "': ", status.message()));
}

// CANCELLED when `options` says the encode is no longer wanted.
absl::Status CheckCancelled(const LayerEncodeOptions& options) {
  if (options.cancelled && options.cancelled())
    return absl::CancelledError("the encode was cancelled");
  return absl::OkStatus();
}

// The tiles of one layer, on our own threads or on borrowed ones.
absl::Status ForEachTile(size_t count, int threads,
                         const LayerEncodeOptions* options,
                         const std::function<absl::Status(size_t)>& fn) {
  if (options != nullptr && options->tile_spawner) {
    return SharedParallelFor(count, options->tile_helpers,
                             options->tile_spawner, fn);
  }
  return ParallelFor(count, threads, fn);
}

// Codes the int8 matrix (or its mosaic, options.mosaic) as HEVC tiles.
absl::Status EncodeHevcTiles(const QuantizedTensor& q,
                             const LayerEncodeOptions& options,
                             PackedLayer* layer) {
  auto [rows, matrix_cols] = MatrixView(q.shape);
  int64_t cols =
      matrix_cols;  // a lambda may not capture a structured binding (C++17)
  absl::Span<const int8_t> values = q.values;
  std::vector<int8_t> mosaic_values;
  if (!options.mosaic.empty()) {
    ASSIGN_OR_RETURN(const MosaicPicture picture,
                     PlanMosaic(rows, cols, options.mosaic));
    mosaic_values = ToMosaic(q.values, cols, options.mosaic, picture);
    values = mosaic_values;
    rows = picture.rows;
    cols = picture.cols;
    layer->mosaic = options.mosaic;
  }
  layer->grid =
      PlanTiles(rows, cols, options.max_tile_size, options.max_tile_pixels);
  layer->tiles.resize(layer->grid.NumTiles());
  layer->qp = options.hevc.lossless ? 0 : options.hevc.qp;
  layer->lossless = options.hevc.lossless;
  layer->preset = options.hevc.preset;
  layer->tools = options.hevc.tools;
  return ForEachTile(
      layer->tiles.size(), options.threads, &options,
      [&](size_t i) -> absl::Status {
        RETURN_IF_ERROR(CheckCancelled(options));
        const Plane plane = ExtractTile(values, cols, layer->grid.Tile(i));
        ASSIGN_OR_RETURN(layer->tiles[i],
                         EncodeIntraPicture(plane, options.hevc));
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<int8_t>> DecodeHevcTiles(
    const PackedLayer& layer, int threads,
    const LayerEncodeOptions* options = nullptr) {
  std::vector<int8_t> values(
      static_cast<size_t>(layer.grid.rows * layer.grid.cols));
  RETURN_IF_ERROR(ForEachTile(
      layer.tiles.size(), threads, options, [&](size_t i) -> absl::Status {
        const TileRect rect = layer.grid.Tile(i);
        auto plane = DecodeIntraPicture(layer.tiles[i], PaddedSize(rect.cols),
                                        PaddedSize(rect.rows));
        if (!plane.ok()) {
          return absl::Status(
              plane.status().code(),
              absl::StrCat("tile ", i, ": ", plane.status().message()));
        }
        InsertTile(*plane, rect, layer.grid.cols, absl::MakeSpan(values));
        return absl::OkStatus();
      }));
  if (layer.mosaic.empty()) return values;
  const auto [rows, cols] = MatrixView(layer.shape);
  ASSIGN_OR_RETURN(const MosaicPicture picture,
                   PlanMosaic(rows, cols, layer.mosaic));
  if (picture.rows != layer.grid.rows || picture.cols != layer.grid.cols) {
    return absl::DataLossError("the tile grid is not the mosaic's picture");
  }
  return FromMosaic(values, rows, cols, layer.mosaic, picture);
}

// `options`: where the tiles run when the encoder checks what it coded.
absl::StatusOr<std::vector<int8_t>> DecodeInt8(
    const PackedLayer& layer, int64_t elements, int threads,
    const LayerEncodeOptions* options = nullptr) {
  switch (layer.codec) {
    case LayerCodec::kHevc:
      return DecodeHevcTiles(layer, threads, options);
    case LayerCodec::kHevcDelta:
      return absl::FailedPreconditionError(
          "a delta layer decodes only with its base (DecodeLayerDelta)");
    case LayerCodec::kZstdInt8: {
      ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                       ZstdDecompress(layer.tiles[0], elements));
      return std::vector<int8_t>(bytes.begin(), bytes.end());
    }
    default:
      return std::vector<int8_t>(layer.tiles[0].begin(), layer.tiles[0].end());
  }
}

absl::StatusOr<PackedLayer> EncodeLayerAs(const Tensor& tensor,
                                          const LayerEncodeOptions& options);
absl::StatusOr<PackedLayer> EncodeWithColumnScales(
    const Tensor& tensor, const LayerEncodeOptions& options);

// The auto front end: the rule picks the scheme from the int8 values, then the
// layer is coded once.
absl::StatusOr<PackedLayer> EncodeLayerChoosingScheme(
    const Tensor& tensor, LayerEncodeOptions options) {
  {
    // Freed before the coding converts the tensor again: one float copy of a
    // large layer at a time, not two.
    ASSIGN_OR_RETURN(const std::vector<float> values, ToFloat32(tensor));
    ASSIGN_OR_RETURN(const FrontEndChoice choice,
                     ChooseFrontEnd(tensor.name, tensor.shape, values));
    options.scheme = choice.scheme;
    options.outliers = choice.outliers;
  }
  options.choose_scheme = false;
  return EncodeLayerAs(tensor, options);
}

}  // namespace

absl::StatusOr<PackedLayer> EncodeLayer(const Tensor& tensor,
                                        const LayerEncodeOptions& options) {
  if (options.find_mosaic && options.mosaic.empty() &&
      options.codec == LayerCodec::kHevc && IsFloatingPoint(tensor.dtype)) {
    LayerEncodeOptions found = options;
    found.find_mosaic = false;
    ASSIGN_OR_RETURN(const std::vector<float> values, ToFloat32(tensor));
    const auto [rows, cols] = MatrixView(tensor.shape);
    found.mosaic = FindMosaic(rows, cols, values);
    return EncodeLayer(tensor, found);
  }
  if (!options.column_scales.empty()) {
    return EncodeWithColumnScales(tensor, options);
  }
  if (options.choose_scheme && IsInt8Codec(options.codec) &&
      IsFloatingPoint(tensor.dtype)) {
    return EncodeLayerChoosingScheme(tensor, options);
  }
  return EncodeLayerAs(tensor, options);
}

namespace {

// The tensor's element count, refused past what one packed layer may hold.
absl::StatusOr<int64_t> LayerElements(const Tensor& tensor) {
  ASSIGN_OR_RETURN(
      const int64_t elements,
      CheckedNumElements(tensor.shape,
                         absl::StrCat("tensor '", tensor.name, "'")));
  if (elements > kMaxLayerElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", tensor.name, "': ", elements,
                     " elements is over the limit"));
  }
  return elements;
}

// EncodeLayer with column scales: the scaled tensor coded as usual, the
// scales recorded, and the fidelity measured again against `tensor` on what a
// client's float output holds.
absl::StatusOr<PackedLayer> EncodeWithColumnScales(
    const Tensor& tensor, const LayerEncodeOptions& options) {
  if (!IsInt8Codec(options.codec) || options.codec == LayerCodec::kHevcDelta ||
      !IsFloatingPoint(tensor.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor.name,
        "': column scales need a floating-point tensor and an int8 codec"));
  }
  ASSIGN_OR_RETURN(const int64_t elements, LayerElements(tensor));
  ColumnScales columns{
      {}, options.column_scale_repeat, MatrixView(tensor.shape).second};
  if (columns.repeat < 1 || elements == 0 ||
      static_cast<int64_t>(options.column_scales.size()) * columns.repeat !=
          columns.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor.name, "': ", options.column_scales.size(),
        " column scales repeated ", columns.repeat, " times do not cover its ",
        columns.cols, " columns"));
  }
  for (float scale : options.column_scales) {
    const float stored = HalfToFloat(FloatToHalf(scale));
    if (!std::isfinite(stored) || stored <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor.name,
                       "': a column scale is not a positive "
                       "float16 number"));
    }
    columns.scales.push_back(stored);
  }
  ASSIGN_OR_RETURN(const std::vector<float> original, ToFloat32(tensor));
  PackedLayer layer;
  {
    std::vector<float> scaled = original;
    for (size_t i = 0; i < scaled.size(); ++i)
      scaled[i] *= columns.of(static_cast<int64_t>(i) % columns.cols);
    LayerEncodeOptions plain = options;
    plain.column_scales.clear();
    ASSIGN_OR_RETURN(
        layer, EncodeLayer(MakeFloat32Tensor(tensor.name, tensor.shape, scaled),
                           plain));
  }
  layer.source_dtype = tensor.dtype;
  layer.column_scales = columns.scales;
  layer.column_scale_repeat = columns.repeat;
  ASSIGN_OR_RETURN(const RebuiltTensor decoded,
                   DecodeLayer(layer, options.threads));
  ASSIGN_OR_RETURN(const Tensor back, decoded.ToFloatTensor());
  ASSIGN_OR_RETURN(const std::vector<float> reconstruction, ToFloat32(back));
  layer.fidelity.sqnr_db = SqnrDb(original, reconstruction);
  layer.fidelity.channel_sqnr_db =
      ChannelSqnrDb(original, reconstruction, MatrixView(tensor.shape).first);
  double max_abs = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(static_cast<double>(original[i]) -
                                         reconstruction[i]));
  }
  layer.fidelity.max_abs_error = max_abs;
  layer.fidelity.bits_per_weight =
      8.0 *
      (layer.PayloadBytes() +
       (layer.outliers.empty() ? 0 : SerializeOutliers(layer.outliers).size()) +
       2 * columns.scales.size()) /
      elements;
  return layer;
}

absl::StatusOr<PackedLayer> EncodeLayerAs(const Tensor& tensor,
                                          const LayerEncodeOptions& options) {
  PackedLayer layer;
  layer.name = tensor.name;
  layer.codec = options.codec;
  layer.shape = tensor.shape;
  layer.source_dtype = tensor.dtype;
  ASSIGN_OR_RETURN(const int64_t elements, LayerElements(tensor));
  if (options.codec == LayerCodec::kHevc && elements == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", tensor.name, "': an empty tensor cannot be a picture"));
  }

  if (options.codec == LayerCodec::kPassthrough) {
    if (tensor.data.size() !=
        static_cast<size_t>(elements) * DTypeSize(tensor.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", tensor.name, "': data size does not match shape"));
    }
    layer.tiles = {tensor.data};
  } else if (!IsInt8Codec(options.codec)) {  // float32 / float16
    ASSIGN_OR_RETURN(const std::vector<float> values, ToFloat32(tensor));
    // A value float16 cannot hold (a finite one past its range) keeps the
    // tensor float32.
    if (options.codec == LayerCodec::kFloat16 &&
        !std::all_of(values.begin(), values.end(), [](float v) {
          return !std::isfinite(v) ||
                 std::isfinite(HalfToFloat(FloatToHalf(v)));
        })) {
      layer.codec = LayerCodec::kFloat32;
    }
    std::vector<uint8_t> payload;
    if (layer.codec == LayerCodec::kFloat32) {
      payload.resize(values.size() * 4);
      if (!values.empty())
        std::memcpy(payload.data(), values.data(), payload.size());
    } else {
      for (float v : values) {
        const uint16_t h = FloatToHalf(v);
        payload.push_back(static_cast<uint8_t>(h));
        payload.push_back(static_cast<uint8_t>(h >> 8));
      }
    }
    layer.tiles = {std::move(payload)};
  }
  if (!IsInt8Codec(options.codec)) {
    layer.decoded_sha256 = Sha256(layer.tiles[0]);
    ASSIGN_OR_RETURN(const RebuiltTensor decoded,
                     DecodeLayer(layer, options.threads));
    layer.fidelity.sqnr_db = layer.fidelity.sqnr_int8_db =
        layer.fidelity.channel_sqnr_db = INFINITY;  // exact
    if (IsFloatingPoint(tensor.dtype)) {
      ASSIGN_OR_RETURN(const std::vector<float> original, ToFloat32(tensor));
      ASSIGN_OR_RETURN(const Tensor back, decoded.ToFloatTensor());
      ASSIGN_OR_RETURN(const std::vector<float> reconstruction,
                       ToFloat32(back));
      layer.fidelity.sqnr_db = layer.fidelity.sqnr_int8_db =
          SqnrDb(original, reconstruction);
      layer.fidelity.channel_sqnr_db =
          ChannelSqnrDb(original, reconstruction,
                        tensor.shape.size() >= 2 ? tensor.shape[0] : 1);
    }
    layer.fidelity.bits_per_weight =
        elements ? 8.0 * layer.PayloadBytes() / elements : 0;
    return layer;
  }

  ASSIGN_OR_RETURN(const std::vector<float> original, ToFloat32(tensor));
  if (options.outliers && options.codec != LayerCodec::kHevcDelta) {
    layer.outliers =
        FindOutliers(tensor.shape, original,
                     options.scheme == QuantScheme::kPerChannelSymmetric ||
                         options.scheme == QuantScheme::kPerChannelAsymmetric);
  }
  ASSIGN_OR_RETURN(
      const QuantizedTensor q,
      layer.outliers.empty()
          ? Quantize(tensor.name, tensor.shape, original, options.scheme)
          : QuantizeWithoutOutliers(tensor.name, tensor.shape, original,
                                    options.scheme, layer.outliers));
  layer.scheme = q.scheme;
  layer.scales = q.scales;
  layer.zero_points = q.zero_points;
  switch (options.codec) {
    case LayerCodec::kHevc: {
      absl::Status status = EncodeHevcTiles(q, options, &layer);
      if (!status.ok()) return Annotate(status, tensor.name);
      break;
    }
    case LayerCodec::kZstdInt8:
      layer.tiles = {ZstdCompress(AsBytes(q.values))};
      break;
    default:
      layer.tiles = {std::vector<uint8_t>(AsBytes(q.values).begin(),
                                          AsBytes(q.values).end())};
  }
  // Decode once, exactly as a client will, to record what it must reproduce.
  auto decoded = DecodeInt8(layer, elements, options.threads, &options);
  if (!decoded.ok()) return Annotate(decoded.status(), tensor.name);
  layer.decoded_sha256 = Sha256(AsBytes(*decoded));
  if (layer.outliers.empty()) {
    layer.fidelity =
        MeasureFidelity(original, q, *decoded, layer.PayloadBytes());
  } else {
    layer.fidelity = MeasureFidelityWithOutliers(
        original, q, *decoded, layer.outliers,
        layer.PayloadBytes() + SerializeOutliers(layer.outliers).size());
  }
  return layer;
}

}  // namespace

absl::Status CheckOutliersFit(const PackedLayer& layer, int64_t elements) {
  const OutlierList& outliers = layer.outliers;
  if (outliers.empty()) return absl::OkStatus();
  if (outliers.values.size() != outliers.indices.size() ||
      outliers.indices.back() >= elements ||
      layer.codec == LayerCodec::kHevcDelta) {
    return absl::DataLossError(absl::StrCat(
        "layer '", layer.name, "': the outlier list does not fit"));
  }
  return absl::OkStatus();
}

absl::Status AttachOutliers(const PackedLayer& layer, RebuiltTensor* out) {
  const OutlierList& outliers = layer.outliers;
  if (outliers.empty()) return absl::OkStatus();
  // The digest covers the picture as coded; the int8 output then holds each
  // outlier saturated, the float output its float16 value.
  if (!out->int8) {
    return absl::DataLossError(absl::StrCat(
        "layer '", layer.name, "': the outlier list does not fit"));
  }
  RETURN_IF_ERROR(
      CheckOutliersFit(layer, static_cast<int64_t>(out->int8->values.size())));
  SaturateOutliers(*out->int8, outliers, absl::MakeSpan(out->int8->values));
  out->outlier_indices = outliers.indices;
  out->outlier_values.clear();
  out->outlier_values.reserve(outliers.values.size());
  for (uint16_t v : outliers.values)
    out->outlier_values.push_back(HalfToFloat(v));
  return absl::OkStatus();
}

namespace {

// The channel SQNR of the int8 values `params` gives against the float rows,
// as ChooseFrontEnd measures it (MeasureFidelity with the int8 values as their
// own decoding; with `outliers` taken out before quantizing and restored in the
// reconstruction, as MeasureFidelityWithOutliers), a chunk at a time.
absl::StatusOr<double> Int8ChannelSqnrFromRows(
    const QuantizedTensor& params, const FloatRowReader& read, int64_t rows,
    int64_t cols, int64_t chunk_rows, absl::string_view name,
    const OutlierList& outliers = {}) {
  FidelityMeter meter(params, static_cast<size_t>(rows * cols));
  const std::vector<float> exact = OutlierFloats(outliers);
  meter.SetExactValues(outliers.indices, exact);
  std::vector<int8_t> q;
  std::vector<float> rest;
  RETURN_IF_ERROR(ForEachRowChunk(
      read, 0, rows, cols, chunk_rows, name,
      [&](int64_t row, absl::Span<const float> values) {
        absl::Span<const float> quantized = values;
        if (!outliers.empty()) {  // a copy only where outliers are zeroed
          rest.assign(values.begin(), values.end());
          ZeroOutliers(outliers, row * cols, absl::MakeSpan(rest));
          quantized = rest;
        }
        q.resize(values.size());
        QuantizeRowsWith(params, row, cols, quantized, 0, cols, q.data());
        meter.Add(static_cast<size_t>(row * cols), values, q, q);
      }));
  return meter.Finish(0).channel_sqnr_db;
}

// A layer's quantization as the rows path codes it: scales and zero points
// (values empty) and the outliers taken out first (none without the outlier
// front end).
struct RowsFrontEnd {
  QuantizedTensor params;
  OutlierList outliers;
};

// `scheme`'s quantization of the rows with (when `outliers`) its outliers
// taken out, and (when `measure`) that int8's channel SQNR: one candidate of
// ChooseFrontEnd.
struct RowsCandidate {
  RowsFrontEnd front_end;
  double channel_sqnr_db = 0;
};
absl::StatusOr<RowsCandidate> MeasureFromRows(
    absl::string_view name, absl::Span<const int64_t> shape,
    const FloatRowReader& read, QuantScheme scheme, bool outliers, bool measure,
    int64_t rows, int64_t cols, int64_t chunk_rows) {
  RowsCandidate candidate;
  RowsFrontEnd& f = candidate.front_end;
  if (outliers) {
    ASSIGN_OR_RETURN(
        f.outliers,
        FindOutliersFromRows(name, rows, cols, read, chunk_rows,
                             scheme == QuantScheme::kPerChannelSymmetric ||
                                 scheme == QuantScheme::kPerChannelAsymmetric));
    if (f.outliers.empty()) return candidate;  // no candidate: SQNR unused
  }
  ASSIGN_OR_RETURN(
      f.params,
      QuantizeParamsFromRows(
          name, shape,
          f.outliers.empty() ? read : WithoutOutliers(read, cols, f.outliers),
          scheme, chunk_rows));
  if (!measure) return candidate;
  ASSIGN_OR_RETURN(candidate.channel_sqnr_db,
                   Int8ChannelSqnrFromRows(f.params, read, rows, cols,
                                           chunk_rows, name, f.outliers));
  return candidate;
}

// The quantization a layer coded from rows takes: the scheme (and outlier
// front end) of `options`, or front_end.h's rule (ChooseFrontEnd), each
// candidate measured by passes over the rows. Memory: a chunk, and the outlier
// candidates.
absl::StatusOr<RowsFrontEnd> FrontEndFromRows(const Tensor& header,
                                              const FloatRowReader& read,
                                              const LayerEncodeOptions& options,
                                              int64_t rows, int64_t cols,
                                              int64_t chunk_rows) {
  if (!options.choose_scheme) {
    ASSIGN_OR_RETURN(
        RowsCandidate chosen,
        MeasureFromRows(
            header.name, header.shape, read, options.scheme,
            options.outliers && options.codec != LayerCodec::kHevcDelta,
            /*measure=*/false, rows, cols, chunk_rows));
    return std::move(chosen.front_end);
  }
  // front_end.h's rule, each candidate measured over the rows; the one it
  // picks is coded.
  std::map<std::pair<QuantScheme, bool>, RowsFrontEnd> measured;
  ASSIGN_OR_RETURN(
      const FrontEndChoice choice,
      ChooseFrontEnd(
          rows,
          [&](QuantScheme scheme,
              bool outliers) -> absl::StatusOr<FrontEndMeasure> {
            ASSIGN_OR_RETURN(RowsCandidate candidate,
                             MeasureFromRows(header.name, header.shape, read,
                                             scheme, outliers, /*measure=*/true,
                                             rows, cols, chunk_rows));
            const FrontEndMeasure m{
                candidate.channel_sqnr_db,
                static_cast<int64_t>(
                    candidate.front_end.outliers.indices.size())};
            measured[{scheme, outliers}] = std::move(candidate.front_end);
            return m;
          }));
  return std::move(measured[{choice.scheme, choice.outliers}]);
}

}  // namespace

absl::StatusOr<std::vector<int8_t>> QuantizeRect(
    const QuantizedTensor& params, const FloatRowReader& read,
    const TileRect& rect, int64_t cols, int64_t chunk_rows,
    absl::string_view name, bool like) {
  std::vector<int8_t> out(static_cast<size_t>(rect.rows * rect.cols));
  absl::Status status;
  RETURN_IF_ERROR(ForEachRowChunk(
      read, rect.row0, rect.rows, cols, chunk_rows, name,
      [&](int64_t row, absl::Span<const float> values) {
        int8_t* to = out.data() + (row - rect.row0) * rect.cols;
        if (!like) {
          QuantizeRowsWith(params, row, cols, values, rect.col0, rect.cols, to);
          return;
        }
        const int64_t rows = static_cast<int64_t>(values.size()) / cols;
        // Bounded by the chunk's rows; stops at the first value out of range.
        for (int64_t r = 0; r < rows && status.ok(); ++r) {
          status = QuantizeRangeLike(
              name, params, (row + r) * cols + rect.col0,
              values.subspan(static_cast<size_t>(r * cols + rect.col0),
                             static_cast<size_t>(rect.cols)),
              to + r * rect.cols);
        }
      }));
  RETURN_IF_ERROR(status);
  return out;
}

absl::StatusOr<PackedLayer> EncodeLayerFromRows(
    const Tensor& header, const FloatRowReader& read,
    const LayerEncodeOptions& options, int64_t chunk_elements) {
  if (!IsInt8Codec(options.codec) || !IsFloatingPoint(header.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", header.name,
                     "': coded from rows only as int8 from floating point"));
  }
  if (!options.column_scales.empty() || !options.mosaic.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", header.name,
                     "': column scales and mosaics are coded from the whole "
                     "tensor (EncodeLayer)"));
  }
  ASSIGN_OR_RETURN(const int64_t elements, LayerElements(header));
  if (elements == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", header.name, "': an empty tensor has no rows to code"));
  }
  // Rows as quantize.h's FloatRowReader and MeasureFidelity count them (the
  // picture's rows too: MatrixView).
  const int64_t rows = header.shape.size() >= 2 ? header.shape[0] : 1;
  const int64_t cols = elements / rows;
  const int64_t chunk_rows =
      std::clamp<int64_t>(chunk_elements / std::max<int64_t>(cols, 1), 1, rows);
  PackedLayer layer;
  layer.name = header.name;
  layer.codec = options.codec;
  layer.shape = header.shape;
  layer.source_dtype = header.dtype;
  ASSIGN_OR_RETURN(
      RowsFrontEnd front_end,
      FrontEndFromRows(header, read, options, rows, cols, chunk_rows));
  const QuantizedTensor& params = front_end.params;
  layer.scheme = params.scheme;
  layer.scales = params.scales;
  layer.zero_points = params.zero_points;
  layer.outliers = std::move(front_end.outliers);
  // The values quantized: the outliers (outliers.h) read as 0.
  const FloatRowReader rest = layer.outliers.empty()
                                  ? read
                                  : WithoutOutliers(read, cols, layer.outliers);
  const TileRect whole{0, 0, rows, cols};
  if (options.codec == LayerCodec::kHevc) {
    // Each tile quantized from its own rows when its job runs: memory follows
    // the tiles in progress, not the layer.
    layer.grid =
        PlanTiles(rows, cols, options.max_tile_size, options.max_tile_pixels);
    layer.tiles.resize(layer.grid.NumTiles());
    layer.qp = options.hevc.lossless ? 0 : options.hevc.qp;
    layer.lossless = options.hevc.lossless;
    layer.preset = options.hevc.preset;
    layer.tools = options.hevc.tools;
    const absl::Status status = ForEachTile(
        layer.tiles.size(), options.threads, &options,
        [&](size_t i) -> absl::Status {
          RETURN_IF_ERROR(CheckCancelled(options));
          const TileRect rect = layer.grid.Tile(i);
          ASSIGN_OR_RETURN(
              const std::vector<int8_t> tile,
              QuantizeRect(params, rest, rect, cols, chunk_rows, header.name));
          const Plane plane = ExtractTile(tile, rect.cols,
                                          TileRect{0, 0, rect.rows, rect.cols});
          ASSIGN_OR_RETURN(layer.tiles[i],
                           EncodeIntraPicture(plane, options.hevc));
          return absl::OkStatus();
        });
    if (!status.ok()) return Annotate(status, header.name);
  } else {
    ASSIGN_OR_RETURN(
        const std::vector<int8_t> q,
        QuantizeRect(params, rest, whole, cols, chunk_rows, header.name));
    layer.tiles = {
        options.codec == LayerCodec::kZstdInt8
            ? ZstdCompress(AsBytes(q))
            : std::vector<uint8_t>(AsBytes(q).begin(), AsBytes(q).end())};
  }
  // Decode once, exactly as a client will, to record what it must reproduce:
  // a band of tile rows at a time (the whole layer for the other codecs),
  // hashed and measured in row order.
  Sha256Hasher hasher;
  FidelityMeter meter(params, static_cast<size_t>(elements));
  const std::vector<float> exact = OutlierFloats(layer.outliers);
  meter.SetExactValues(layer.outliers.indices, exact);
  const int64_t band_rows =
      options.codec == LayerCodec::kHevc ? layer.grid.tile_rows : rows;
  // Bounded: one round per band.
  for (int64_t row0 = 0; row0 < rows; row0 += band_rows) {
    RETURN_IF_ERROR(CheckCancelled(options));
    const int64_t n = std::min(band_rows, rows - row0);
    std::vector<int8_t> decoded;
    if (options.codec == LayerCodec::kHevc) {
      decoded.resize(static_cast<size_t>(n * cols));
      const int64_t first_tile = row0 / band_rows * layer.grid.ColTiles();
      const absl::Status status = ForEachTile(
          static_cast<size_t>(layer.grid.ColTiles()), options.threads, &options,
          [&](size_t c) -> absl::Status {
            const size_t i = static_cast<size_t>(first_tile) + c;
            TileRect rect = layer.grid.Tile(static_cast<int64_t>(i));
            auto plane = DecodeIntraPicture(
                layer.tiles[i], PaddedSize(rect.cols), PaddedSize(rect.rows));
            if (!plane.ok()) {
              return absl::Status(
                  plane.status().code(),
                  absl::StrCat("tile ", i, ": ", plane.status().message()));
            }
            rect.row0 -= row0;
            InsertTile(*plane, rect, cols, absl::MakeSpan(decoded));
            return absl::OkStatus();
          });
      if (!status.ok()) return Annotate(status, header.name);
    } else {
      auto all = DecodeInt8(layer, elements, options.threads, &options);
      if (!all.ok()) return Annotate(all.status(), header.name);
      decoded = *std::move(all);
    }
    hasher.Update(AsBytes(decoded));
    std::vector<int8_t> q;
    std::vector<float> without;
    RETURN_IF_ERROR(ForEachRowChunk(
        read, row0, n, cols, chunk_rows, header.name,
        [&](int64_t row, absl::Span<const float> values) {
          absl::Span<const float> quantized = values;
          if (!layer.outliers.empty()) {
            without.assign(values.begin(), values.end());
            ZeroOutliers(layer.outliers, row * cols, absl::MakeSpan(without));
            quantized = without;
          }
          q.resize(values.size());
          QuantizeRowsWith(params, row, cols, quantized, 0, cols, q.data());
          meter.Add(
              static_cast<size_t>(row * cols), values, q,
              absl::MakeConstSpan(decoded).subspan(
                  static_cast<size_t>((row - row0) * cols), values.size()));
        }));
  }
  layer.decoded_sha256 = hasher.Finish();
  layer.fidelity = meter.Finish(
      layer.PayloadBytes() +
      (layer.outliers.empty() ? 0 : SerializeOutliers(layer.outliers).size()));
  return layer;
}

absl::StatusOr<RebuiltTensor> DecodeLayer(const PackedLayer& layer,
                                          int threads) {
  RebuiltTensor out;
  out.name = layer.name;
  out.shape = layer.shape;
  ASSIGN_OR_RETURN(const int64_t elements,
                   CheckedNumElements(
                       layer.shape, absl::StrCat("layer '", layer.name, "'")));
  if (layer.tiles.empty())
    return absl::DataLossError(
        absl::StrCat("layer '", layer.name, "': no payload"));
  Sha256Digest digest;
  if (IsInt8Codec(layer.codec)) {
    auto values = DecodeInt8(layer, elements, threads);
    if (!values.ok()) return Annotate(values.status(), layer.name);
    if (values->size() != static_cast<size_t>(elements)) {
      return absl::DataLossError(absl::StrCat("layer '", layer.name,
                                              "': decoded ", values->size(),
                                              " values, expected ", elements));
    }
    digest = Sha256(AsBytes(*values));
    ASSIGN_OR_RETURN(out, RebuiltFromInt8(layer, std::move(*values)));
  } else {
    out.stored.name = layer.name;
    out.stored.shape = layer.shape;
    out.stored.dtype = layer.codec == LayerCodec::kFloat32 ? DType::kFloat32
                       : layer.codec == LayerCodec::kFloat16
                           ? DType::kFloat16
                           : layer.source_dtype;
    out.stored.data = layer.tiles[0];
    if (out.stored.data.size() !=
        static_cast<size_t>(elements) * DTypeSize(out.stored.dtype)) {
      return absl::DataLossError(absl::StrCat(
          "layer '", layer.name, "': payload size does not match shape"));
    }
    digest = Sha256(out.stored.data);
  }
  RETURN_IF_ERROR(CheckDecodedDigest(layer, digest));
  return out;
}

absl::StatusOr<ColumnScales> ColumnScalesOf(const PackedLayer& layer) {
  ColumnScales columns;
  if (layer.column_scales.empty()) return columns;
  columns = ColumnScales{layer.column_scales, layer.column_scale_repeat,
                         MatrixView(layer.shape).second};
  if (columns.repeat < 1 || columns.cols < 1 ||
      static_cast<int64_t>(columns.scales.size()) * columns.repeat !=
          columns.cols) {
    return absl::DataLossError(absl::StrCat(
        "layer '", layer.name, "': its column scales do not fit its shape"));
  }
  return columns;
}

absl::StatusOr<RebuiltTensor> RebuiltFromInt8(const PackedLayer& layer,
                                              std::vector<int8_t> values) {
  RebuiltTensor out;
  out.name = layer.name;
  out.shape = layer.shape;
  out.int8 = QuantizedTensor{layer.shape, layer.scheme, std::move(values),
                             layer.scales, layer.zero_points};
  RETURN_IF_ERROR(AttachOutliers(layer, &out));
  ASSIGN_OR_RETURN(out.columns, ColumnScalesOf(layer));
  return out;
}

absl::Status CheckDecodedDigest(const PackedLayer& layer,
                                const Sha256Digest& digest) {
  if (digest == layer.decoded_sha256) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "layer '", layer.name, "': SHA-256 of the decoded data is ",
      DigestToHex(digest), ", expected ", DigestToHex(layer.decoded_sha256)));
}

std::vector<float> ColumnScalesFromInputRms(absl::Span<const float> rms,
                                            double alpha) {
  double mean = 0;
  for (float v : rms) mean += v;
  mean = rms.empty() ? 0 : mean / rms.size();
  std::vector<float> scales(rms.size(), 1.0f);
  if (!(mean > 0) || !std::isfinite(mean)) return scales;
  for (size_t i = 0; i < rms.size(); ++i) {
    const double ratio = std::max(0.0, static_cast<double>(rms[i]) / mean);
    scales[i] =
        static_cast<float>(std::clamp(std::pow(ratio, alpha), 1.0 / 16, 16.0));
  }
  return scales;
}

void WeighColumns(const Tensor& tensor, const InputRmsMap& input_rms,
                  LayerEncodeOptions* options) {
  options->column_scales.clear();
  options->column_scale_repeat = 1;
  const auto rms = input_rms.find(tensor.name);
  if (rms == input_rms.end() || options->codec != LayerCodec::kHevc ||
      options->hevc.lossless || rms->second.empty() ||
      !IsFloatingPoint(tensor.dtype)) {
    return;
  }
  const int64_t cols = MatrixView(tensor.shape).second;
  const int64_t figures = static_cast<int64_t>(rms->second.size());
  if (cols % figures != 0) return;
  options->column_scales = ColumnScalesFromInputRms(rms->second);
  options->column_scale_repeat = cols / figures;
}

}  // namespace weightcast
