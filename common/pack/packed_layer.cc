#include "common/pack/packed_layer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "weightcast/v1/packed_layer.pb.h"

namespace weightcast {
namespace {

constexpr char kMagic[4] = {'W', 'C', 'L', '1'};
constexpr uint32_t kFormatVersion = 1;
// A layer with an outlier side list: older readers refuse it by its version.
constexpr uint32_t kOutlierFormatVersion = 2;
// A layer with column scales (and outliers or not).
constexpr uint32_t kColumnScaleFormatVersion = 3;
// A layer with a mosaic layout (and column scales and outliers or not).
constexpr uint32_t kMosaicFormatVersion = 4;

struct CodecInfo {
  LayerCodec codec;
  v1::LayerCodec proto;
  absl::string_view name;
};
constexpr CodecInfo kCodecs[] = {
    {LayerCodec::kHevc, v1::LAYER_CODEC_HEVC, "hevc"},
    {LayerCodec::kRawInt8, v1::LAYER_CODEC_RAW_INT8, "raw-int8"},
    {LayerCodec::kZstdInt8, v1::LAYER_CODEC_ZSTD_INT8, "zstd-int8"},
    {LayerCodec::kFloat32, v1::LAYER_CODEC_FLOAT32, "float32"},
    {LayerCodec::kFloat16, v1::LAYER_CODEC_FLOAT16, "float16"},
    {LayerCodec::kPassthrough, v1::LAYER_CODEC_PASSTHROUGH, "passthrough"},
    {LayerCodec::kHevcDelta, v1::LAYER_CODEC_HEVC_DELTA, "hevc-delta"},
};

v1::QuantScheme SchemeToProto(QuantScheme scheme) {
  return static_cast<v1::QuantScheme>(QuantSchemeProtoNumber(scheme));
}

absl::Status Invalid(absl::string_view layer, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "packed layer", layer.empty() ? "" : absl::StrCat(" '", layer, "'"), ": ",
      what));
}

// The payload size a non-HEVC codec must have for `elements` values, or -1 when
// it varies.
int64_t FixedPayloadBytes(LayerCodec codec, int64_t elements, DType dtype) {
  switch (codec) {
    case LayerCodec::kRawInt8:
      return elements;
    case LayerCodec::kFloat32:
      return elements * 4;
    case LayerCodec::kFloat16:
      return elements * 2;
    case LayerCodec::kPassthrough:
      return elements * static_cast<int64_t>(DTypeSize(dtype));
    default:
      return -1;
  }
}

// Format version 3's column scales into `layer` (its codec and shape set):
// present in version 3 (and allowed in 4), on an int8 codec but kHevcDelta,
// positive finite float16 values whose count times their repeat is the
// matrix's columns.
absl::Status ParseColumnScales(const v1::PackedLayerHeader& header,
                               PackedLayer* layer) {
  const absl::string_view name = layer->name;
  const std::string& bytes = header.column_scales();
  const bool present = !bytes.empty();
  if ((header.format_version() == kColumnScaleFormatVersion && !present) ||
      (present && header.format_version() < kColumnScaleFormatVersion) ||
      (!present && header.column_scale_repeat() != 0)) {
    return Invalid(
        name, absl::StrCat("format version ", header.format_version(), " with ",
                           bytes.size(), " bytes of column scales"));
  }
  if (!present) return absl::OkStatus();
  if (!IsInt8Codec(layer->codec) || layer->codec == LayerCodec::kHevcDelta) {
    return Invalid(name, "column scales on a codec that cannot have them");
  }
  const int64_t cols = MatrixView(layer->shape).second;
  const int64_t repeat = header.column_scale_repeat();
  if (bytes.size() % 2 != 0 || repeat < 1 ||
      static_cast<int64_t>(bytes.size() / 2) * repeat != cols) {
    return Invalid(
        name, absl::StrCat(bytes.size() / 2, " column scales repeated ", repeat,
                           " times do not cover ", cols, " columns"));
  }
  layer->column_scale_repeat = repeat;
  layer->column_scales.resize(bytes.size() / 2);
  for (size_t i = 0; i < layer->column_scales.size(); ++i) {
    const uint16_t bits =
        static_cast<uint8_t>(bytes[2 * i]) |
        static_cast<uint16_t>(static_cast<uint8_t>(bytes[2 * i + 1])) << 8;
    const float scale = HalfToFloat(bits);
    if (!std::isfinite(scale) || scale <= 0)
      return Invalid(name, "a column scale is not a positive number");
    layer->column_scales[i] = scale;
  }
  return absl::OkStatus();
}

// Whether proto3 serializes this double: any value but +0.0 (-0.0 included).
bool IsWritten(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits != 0;
}

absl::StatusOr<PackedLayer> FromHeader(const v1::PackedLayerHeader& header,
                                       uint64_t payload_available) {
  PackedLayer layer;
  layer.name = header.name();
  const absl::string_view name = layer.name;
  if (header.format_version() < kFormatVersion ||
      header.format_version() > kMosaicFormatVersion) {
    return Invalid(name,
                   absl::StrCat("format version ", header.format_version(),
                                " is not supported"));
  }
  bool known = false;
  for (const CodecInfo& info : kCodecs) {
    if (info.proto == header.codec()) {
      layer.codec = info.codec;
      known = true;
    }
  }
  if (!known)
    return Invalid(name, absl::StrCat("unknown codec ", header.codec()));
  if (header.shape_size() > kMaxTensorRank)
    return Invalid(name, "too many dimensions");
  layer.shape.assign(header.shape().begin(), header.shape().end());
  auto elements = CheckedNumElements(layer.shape, "shape");
  if (!elements.ok()) return Invalid(name, elements.status().message());
  if (*elements > kMaxLayerElements)
    return Invalid(name,
                   absl::StrCat(*elements, " elements is over the limit"));
  auto dtype = DTypeFromName(header.source_dtype());
  if (!dtype.ok()) return Invalid(name, dtype.status().message());
  layer.source_dtype = *dtype;

  if (IsInt8Codec(layer.codec)) {
    if (header.quant_scheme() < v1::QUANT_SCHEME_PER_TENSOR_SYMMETRIC ||
        header.quant_scheme() > v1::QUANT_SCHEME_PER_CHANNEL_ASYMMETRIC) {
      return Invalid(name, "unknown quantization scheme");
    }
    layer.scheme = static_cast<QuantScheme>(header.quant_scheme() - 1);
    const int64_t channels = header.scales_size();
    const int64_t expected_channels = ScaleCount(layer.scheme, layer.shape);
    if (channels != expected_channels ||
        header.zero_points_size() != channels) {
      return Invalid(
          name,
          absl::StrCat(channels, " scales and ", header.zero_points_size(),
                       " zero points, expected ", expected_channels));
    }
    for (float scale : header.scales()) {
      if (!std::isfinite(scale) || scale <= 0)
        return Invalid(name, "a scale is not a positive number");
    }
    for (int32_t zero : header.zero_points()) {
      if (zero < -128 || zero > 127)
        return Invalid(name, "a zero point is outside int8");
    }
    layer.scales.assign(header.scales().begin(), header.scales().end());
    layer.zero_points.assign(header.zero_points().begin(),
                             header.zero_points().end());
  }

  int64_t expected_tiles = 1;
  const bool has_mosaic =
      header.mosaic_block_rows() != 0 || header.mosaic_block_cols() != 0;
  if (has_mosaic != (header.format_version() == kMosaicFormatVersion) ||
      (has_mosaic && layer.codec != LayerCodec::kHevc)) {
    return Invalid(name,
                   absl::StrCat("format version ", header.format_version(),
                                has_mosaic ? " with" : " without",
                                " a mosaic on codec ", header.codec()));
  }
  if (IsPictureCodec(layer.codec)) {
    auto [rows, cols] = MatrixView(layer.shape);
    if (has_mosaic) {
      layer.mosaic =
          Mosaic{header.mosaic_block_rows(), header.mosaic_block_cols()};
      auto picture = PlanMosaic(rows, cols, layer.mosaic);
      if (!picture.ok()) return Invalid(name, picture.status().message());
      rows = picture->rows;
      cols = picture->cols;
    }
    layer.grid = TileGrid{header.matrix_rows(), header.matrix_cols(),
                          header.tile_rows(), header.tile_cols()};
    if (layer.grid.rows != rows || layer.grid.cols != cols) {
      return Invalid(
          name,
          absl::StrCat("matrix ", layer.grid.rows, "x", layer.grid.cols,
                       " does not match shape ", ShapeToString(layer.shape)));
    }
    if (absl::Status s = ValidateTileGrid(layer.grid, kDefaultMaxTileSize * 4);
        !s.ok()) {
      return Invalid(name, s.message());
    }
    expected_tiles = layer.grid.NumTiles();
    if (!header.lossless() && (header.qp() < 0 || header.qp() > 51))
      return Invalid(name, "QP outside 0..51");
  }
  if (layer.codec == LayerCodec::kHevcDelta) {
    if (header.base_sha256().size() != layer.base_sha256.size() ||
        header.lossless()) {
      return Invalid(
          name, "a delta layer needs a 32-byte base SHA-256 and a lossy QP");
    }
    std::memcpy(layer.base_sha256.data(), header.base_sha256().data(),
                layer.base_sha256.size());
  }
  if (header.tile_bytes_size() != expected_tiles) {
    return Invalid(
        name, absl::StrCat(header.tile_bytes_size(), " tile lengths, expected ",
                           expected_tiles));
  }
  uint64_t total = 0;
  for (uint64_t bytes : header.tile_bytes()) {
    if (bytes > payload_available - total) {
      return Invalid(name,
                     absl::StrCat("tile lengths exceed the ", payload_available,
                                  " payload bytes present"));
    }
    total += bytes;
  }
  const int64_t fixed =
      FixedPayloadBytes(layer.codec, *elements, layer.source_dtype);
  if (fixed >= 0 && total != static_cast<uint64_t>(fixed)) {
    return Invalid(
        name, absl::StrCat("payload of ", total, " bytes, expected ", fixed));
  }
  if (header.decoded_sha256().size() != layer.decoded_sha256.size()) {
    return Invalid(name, "SHA-256 is not 32 bytes");
  }
  std::memcpy(layer.decoded_sha256.data(), header.decoded_sha256().data(),
              layer.decoded_sha256.size());
  layer.fidelity = Fidelity{};
  layer.fidelity.sqnr_db = header.sqnr_db();
  layer.fidelity.sqnr_int8_db = header.sqnr_int8_db();
  layer.fidelity.max_abs_error = header.max_abs_error();
  layer.fidelity_in_header = IsWritten(header.sqnr_db()) ||
                             IsWritten(header.sqnr_int8_db()) ||
                             IsWritten(header.max_abs_error());
  const uint32_t version = header.format_version();
  const bool has_outliers = header.outlier_count() > 0;
  if ((version == kOutlierFormatVersion && !has_outliers) ||
      (version == kFormatVersion && has_outliers) ||
      (!has_outliers && !header.outliers().empty())) {
    return Invalid(
        name, absl::StrCat("format version ", header.format_version(), " with ",
                           header.outlier_count(), " outliers"));
  }
  if (has_outliers) {
    if (!IsInt8Codec(layer.codec) || layer.codec == LayerCodec::kHevcDelta) {
      return Invalid(name, "an outlier list on a codec that cannot have one");
    }
    auto outliers = ParseOutliers(
        absl::MakeConstSpan(
            reinterpret_cast<const uint8_t*>(header.outliers().data()),
            header.outliers().size()),
        header.outlier_count(), *elements);
    if (!outliers.ok()) return Invalid(name, outliers.status().message());
    layer.outliers = *std::move(outliers);
  }
  RETURN_IF_ERROR(ParseColumnScales(header, &layer));
  layer.fidelity.bits_per_weight = *elements
                                       ? 8.0 *
                                             (total + header.outliers().size() +
                                              header.column_scales().size()) /
                                             *elements
                                       : 0.0;
  layer.qp = header.qp();
  layer.lossless = header.lossless();
  layer.preset = header.x265_preset();
  if (header.x265_tools_size() > kMaxX265Tools)
    return Invalid(header.name(), "lists too many x265 tools");
  for (const std::string& tool : header.x265_tools()) {
    if (tool.size() > kMaxX265ToolBytes)
      return Invalid(header.name(), "names an x265 tool too long");
    layer.tools.push_back(tool);
  }
  layer.tiles.resize(expected_tiles);
  return layer;
}

}  // namespace

absl::string_view LayerCodecName(LayerCodec codec) {
  for (const CodecInfo& info : kCodecs) {
    if (info.codec == codec) return info.name;
  }
  return "unknown";
}

int LayerCodecProtoNumber(LayerCodec codec) {
  for (const CodecInfo& info : kCodecs) {
    if (info.codec == codec) return info.proto;
  }
  return v1::LAYER_CODEC_UNSPECIFIED;
}

int QuantSchemeProtoNumber(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::kPerTensorSymmetric:
      return v1::QUANT_SCHEME_PER_TENSOR_SYMMETRIC;
    case QuantScheme::kPerChannelSymmetric:
      return v1::QUANT_SCHEME_PER_CHANNEL_SYMMETRIC;
    case QuantScheme::kPerTensorAsymmetric:
      return v1::QUANT_SCHEME_PER_TENSOR_ASYMMETRIC;
    case QuantScheme::kPerChannelAsymmetric:
      return v1::QUANT_SCHEME_PER_CHANNEL_ASYMMETRIC;
  }
  return v1::QUANT_SCHEME_UNSPECIFIED;
}

bool IsInt8Codec(LayerCodec codec) {
  return IsPictureCodec(codec) || codec == LayerCodec::kRawInt8 ||
         codec == LayerCodec::kZstdInt8;
}

bool IsPictureCodec(LayerCodec codec) {
  return codec == LayerCodec::kHevc || codec == LayerCodec::kHevcDelta;
}

uint64_t PackedLayer::PayloadBytes() const {
  uint64_t total = 0;
  for (const auto& tile : tiles) total += tile.size();
  return total;
}

std::vector<uint8_t> SerializePackedLayer(const PackedLayer& layer) {
  v1::PackedLayerHeader header;
  header.set_format_version(!layer.mosaic.empty() ? kMosaicFormatVersion
                            : !layer.column_scales.empty()
                                ? kColumnScaleFormatVersion
                            : !layer.outliers.empty() ? kOutlierFormatVersion
                                                      : kFormatVersion);
  header.set_name(layer.name);
  for (const CodecInfo& info : kCodecs) {
    if (info.codec == layer.codec) header.set_codec(info.proto);
  }
  for (int64_t d : layer.shape) header.add_shape(d);
  header.set_source_dtype(std::string(DTypeName(layer.source_dtype)));
  if (IsInt8Codec(layer.codec)) {
    header.set_quant_scheme(SchemeToProto(layer.scheme));
    for (float s : layer.scales) header.add_scales(s);
    for (int32_t z : layer.zero_points) header.add_zero_points(z);
  }
  if (!layer.outliers.empty()) {
    header.set_outlier_count(layer.outliers.indices.size());
    const std::vector<uint8_t> frame = SerializeOutliers(layer.outliers);
    header.set_outliers(frame.data(), frame.size());
  }
  if (!layer.column_scales.empty()) {
    std::string bytes(2 * layer.column_scales.size(), '\0');
    for (size_t i = 0; i < layer.column_scales.size(); ++i) {
      const uint16_t bits = FloatToHalf(layer.column_scales[i]);
      bytes[2 * i] = static_cast<char>(bits & 0xff);
      bytes[2 * i + 1] = static_cast<char>(bits >> 8);
    }
    header.set_column_scales(bytes);
    header.set_column_scale_repeat(
        static_cast<uint32_t>(layer.column_scale_repeat));
  }
  if (layer.codec == LayerCodec::kHevcDelta) {
    header.set_base_sha256(layer.base_sha256.data(), layer.base_sha256.size());
  }
  if (IsPictureCodec(layer.codec)) {
    header.set_matrix_rows(layer.grid.rows);
    header.set_matrix_cols(layer.grid.cols);
    header.set_tile_rows(layer.grid.tile_rows);
    header.set_tile_cols(layer.grid.tile_cols);
    header.set_qp(layer.qp);
    header.set_lossless(layer.lossless);
    header.set_mosaic_block_rows(
        static_cast<uint32_t>(layer.mosaic.block_rows));
    header.set_mosaic_block_cols(
        static_cast<uint32_t>(layer.mosaic.block_cols));
    header.set_x265_preset(layer.preset);
    for (const std::string& tool : layer.tools) header.add_x265_tools(tool);
  }
  for (const auto& tile : layer.tiles) header.add_tile_bytes(tile.size());
  header.set_decoded_sha256(layer.decoded_sha256.data(),
                            layer.decoded_sha256.size());
  if (layer.fidelity_in_header) {
    header.set_sqnr_db(layer.fidelity.sqnr_db);
    header.set_sqnr_int8_db(layer.fidelity.sqnr_int8_db);
    header.set_max_abs_error(layer.fidelity.max_abs_error);
  }

  const std::string header_bytes = header.SerializeAsString();
  // Magic, length and header written in place (GCC 12 misreads inserts into a
  // reserved vector as overflows: -Wstringop-overflow).
  std::vector<uint8_t> out(8 + header_bytes.size());
  std::memcpy(out.data(), kMagic, 4);
  const uint32_t length = static_cast<uint32_t>(header_bytes.size());
  for (int i = 0; i < 4; ++i)
    out[4 + i] = static_cast<uint8_t>(length >> (8 * i));
  std::memcpy(out.data() + 8, header_bytes.data(), header_bytes.size());
  out.reserve(out.size() + layer.PayloadBytes());
  for (const auto& tile : layer.tiles)
    out.insert(out.end(), tile.begin(), tile.end());
  return out;
}

absl::StatusOr<PackedLayerHead> ParsePackedLayerHead(
    absl::Span<const uint8_t> prefix, uint64_t total) {
  if (total < 8 || (!prefix.empty() &&
                    std::memcmp(prefix.data(), kMagic,
                                std::min<size_t>(prefix.size(), 4)) != 0)) {
    return Invalid("", "does not start with the WCL1 magic");
  }
  if (prefix.size() < 8)
    return absl::UnavailableError("the packed layer's header is not in yet");
  uint32_t length = 0;
  for (int i = 0; i < 4; ++i)
    length |= static_cast<uint32_t>(prefix[4 + i]) << (8 * i);
  if (length > kMaxHeaderBytes || length > total - 8) {
    return Invalid("", absl::StrCat("header length ", length, " exceeds the ",
                                    total - 8, " bytes present"));
  }
  if (length > prefix.size() - 8)
    return absl::UnavailableError("the packed layer's header is not in yet");
  v1::PackedLayerHeader header;
  if (!header.ParseFromArray(prefix.data() + 8, static_cast<int>(length))) {
    return Invalid("", "header is not a valid PackedLayerHeader");
  }
  const uint64_t payload_offset = 8 + uint64_t{length};
  PackedLayerHead head;
  ASSIGN_OR_RETURN(head.layer, FromHeader(header, total - payload_offset));
  uint64_t offset = payload_offset;
  for (int i = 0; i < header.tile_bytes_size(); ++i) {
    head.offsets.starts.push_back(offset);
    offset += header.tile_bytes(i);  // bounded by FromHeader's sum check
  }
  head.offsets.end = offset;
  return head;
}

absl::StatusOr<PackedLayer> ParsePackedLayer(absl::Span<const uint8_t> bytes,
                                             size_t* consumed) {
  // The whole layer is present: never UNAVAILABLE.
  absl::StatusOr<PackedLayerHead> head =
      ParsePackedLayerHead(bytes, bytes.size());
  RETURN_IF_ERROR(head.status());
  PackedLayer& layer = head->layer;
  const TileOffsets& offsets = head->offsets;
  for (size_t i = 0; i < offsets.starts.size(); ++i) {
    layer.tiles[i].assign(bytes.data() + offsets.starts[i],
                          bytes.data() + offsets.TileEnd(i));
  }
  *consumed = static_cast<size_t>(offsets.end);
  return std::move(layer);
}

}  // namespace weightcast
