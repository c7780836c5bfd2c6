#include "common/pack/delta_codec.h"

#include <algorithm>
#include <atomic>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/parallel_for.h"
#include "common/base/status_macros.h"
#include "common/hevc/de265_decoder.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
#include "common/pack/layer_codec.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"

namespace weightcast {
namespace {

absl::Span<const uint8_t> AsBytes(absl::Span<const int8_t> values) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(values.data()),
                             values.size());
}

std::vector<uint8_t> Concat(
    std::initializer_list<absl::Span<const uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (absl::Span<const uint8_t> part : parts)
    out.insert(out.end(), part.begin(), part.end());
  return out;
}

// DATA_LOSS when the delta's grid is not its base's.
absl::Status CheckDeltaGrid(const PackedLayer& base, const PackedLayer& delta) {
  if (delta.tiles.size() != base.tiles.size() ||
      delta.grid.rows != base.grid.rows || delta.grid.cols != base.grid.cols ||
      delta.grid.tile_rows != base.grid.tile_rows ||
      delta.grid.tile_cols != base.grid.tile_cols) {
    return absl::DataLossError(
        absl::StrCat(delta.tiles.size(), " delta tiles do not fit a base of ",
                     base.tiles.size()));
  }
  return absl::OkStatus();
}

// Rows [row0, row0 + the values' rows) of B's int8 matrix, a band of whole
// tile rows: per tile, [delta parameter sets, A's slices, B's P picture]
// decoded, the second picture kept.
absl::Status DecodeDeltaBand(const PackedLayer& base, const PackedLayer& delta,
                             int64_t row0, int threads,
                             absl::Span<int8_t> values) {
  const int64_t cols = base.grid.cols;
  const int64_t rows = static_cast<int64_t>(values.size()) / cols;
  const int64_t first_tile = row0 / base.grid.tile_rows * base.grid.ColTiles();
  const int64_t tiles = (rows + base.grid.tile_rows - 1) / base.grid.tile_rows *
                        base.grid.ColTiles();
  return ParallelFor(
      static_cast<size_t>(tiles), threads, [&](size_t t) -> absl::Status {
        const size_t i = static_cast<size_t>(first_tile) + t;
        TileRect rect = base.grid.Tile(static_cast<int64_t>(i));
        const HevcSequence held = SplitParameterSets(base.tiles[i]);
        const HevcSequence sent = SplitParameterSets(delta.tiles[i]);
        const std::vector<uint8_t> stitched =
            Concat({sent.parameter_sets, held.pictures[0], sent.pictures[0]});
        auto pictures = DecodeSequence(stitched, PaddedSize(rect.cols),
                                       PaddedSize(rect.rows), 2);
        if (!pictures.ok()) {
          return absl::Status(
              pictures.status().code(),
              absl::StrCat("tile ", i, ": ", pictures.status().message()));
        }
        if (pictures->size() != 2)
          return absl::DataLossError(
              absl::StrCat("tile ", i, ": no P picture"));
        rect.row0 -= row0;
        InsertTile((*pictures)[1], rect, cols, values);
        return absl::OkStatus();
      });
}

// B's int8 matrix, whole.
absl::StatusOr<std::vector<int8_t>> DecodeDeltaTiles(const PackedLayer& base,
                                                     const PackedLayer& delta,
                                                     int threads) {
  RETURN_IF_ERROR(CheckDeltaGrid(base, delta));
  std::vector<int8_t> values(
      static_cast<size_t>(base.grid.rows * base.grid.cols));
  RETURN_IF_ERROR(
      DecodeDeltaBand(base, delta, 0, threads, absl::MakeSpan(values)));
  return values;
}

absl::Status Annotate(const absl::Status& status, absl::string_view layer) {
  return absl::Status(
      status.code(),
      absl::StrCat("layer '", layer, "' (delta): ", status.message()));
}

// What every QP a delta search tries shares, found once: A's scales (checked
// to be the base's), B checked to fit them, and the base's digest.
struct DeltaInputs {
  QuantizedTensor qa;  // scales and zero points; values empty
  Sha256Digest base_sha256;
  int64_t rows = 0, cols = 0, chunk_rows = 0;
};

// nullopt when no delta can be made: another shape, a lossless or non-HEVC
// base, a base with outliers, column scales or a mosaic, or a value of B
// outside A's scale range (B is then sent whole).
absl::StatusOr<std::optional<DeltaInputs>> PrepareDelta(
    const PackedLayer& base, const TensorRows& base_source,
    const TensorRows& target, int64_t chunk_elements) {
  if (base.codec != LayerCodec::kHevc || base.lossless ||
      !base.outliers.empty() || !base.column_scales.empty() ||
      !base.mosaic.empty() || target.header.shape != base.shape ||
      base_source.header.shape != base.shape) {
    return std::nullopt;
  }
  DeltaInputs in;
  std::tie(in.rows, in.cols) = MatrixView(base.shape);
  if (in.rows * in.cols == 0) return std::nullopt;
  const absl::string_view name = target.header.name;
  in.chunk_rows = std::clamp<int64_t>(
      chunk_elements / std::max<int64_t>(in.cols, 1), 1, in.rows);
  ASSIGN_OR_RETURN(
      in.qa, QuantizeParamsFromRows(base.name, base.shape, base_source.rows,
                                    base.scheme, in.chunk_rows));
  if (in.qa.scales != base.scales || in.qa.zero_points != base.zero_points) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", base.name,
                     "': the base source is not what the base was coded from"));
  }
  // B on A's scales (QuantizeLike), checked over its rows first.
  absl::Status fits;
  std::vector<int8_t> scratch;
  RETURN_IF_ERROR(
      ForEachRowChunk(target.rows, 0, in.rows, in.cols, in.chunk_rows, name,
                      [&](int64_t row, absl::Span<const float> values) {
                        if (!fits.ok()) return;
                        scratch.resize(values.size());
                        fits = QuantizeRangeLike(name, in.qa, row * in.cols,
                                                 values, scratch.data());
                      }));
  if (!fits.ok()) return std::nullopt;
  in.base_sha256 = Sha256(SerializePackedLayer(base));
  return in;
}

// The delta of B at A's QP + `qp_offset` from prepared inputs; nullopt when
// x265 did not reproduce a tile of A.
absl::StatusOr<std::optional<PackedLayer>> CodeDelta(
    const PackedLayer& base, const DeltaInputs& in,
    const TensorRows& base_source, const TensorRows& target, int qp_offset,
    int threads) {
  const QuantizedTensor& qa = in.qa;
  const int64_t rows = in.rows, cols = in.cols, chunk_rows = in.chunk_rows;
  const absl::string_view name = target.header.name;
  const HevcEncodeOptions options{.qp = base.qp,
                                  .lossless = false,
                                  .preset = base.preset,
                                  .tools = base.tools};
  const int p_qp = base.qp + qp_offset;
  if (p_qp < 0 || p_qp > 51)
    return absl::InvalidArgumentError(
        absl::StrCat("delta QP ", p_qp, " is outside 0..51"));
  PackedLayer delta = base;  // grid, scales, QP, preset, dtype
  delta.name = target.header.name;
  delta.codec = LayerCodec::kHevcDelta;
  delta.source_dtype = target.header.dtype;
  delta.base_sha256 = in.base_sha256;
  delta.tiles.assign(base.tiles.size(), {});
  std::atomic<bool> reproduced{true};
  // Each tile's two pictures quantized from their own rows when its job runs.
  absl::Status encoded =
      ParallelFor(base.tiles.size(), threads, [&](size_t i) -> absl::Status {
        const TileRect rect = base.grid.Tile(static_cast<int64_t>(i));
        const TileRect local{0, 0, rect.rows, rect.cols};
        ASSIGN_OR_RETURN(const std::vector<int8_t> a,
                         QuantizeRect(qa, base_source.rows, rect, cols,
                                      chunk_rows, base.name));
        ASSIGN_OR_RETURN(const std::vector<int8_t> b,
                         QuantizeRect(qa, target.rows, rect, cols, chunk_rows,
                                      name, /*like=*/true));
        const Plane pa = ExtractTile(a, rect.cols, local);
        const Plane pb = ExtractTile(b, rect.cols, local);
        ASSIGN_OR_RETURN(HevcSequence sequence,
                         EncodeSequence({&pa, &pb}, {base.qp, p_qp}, options));
        if (sequence.pictures[0] !=
            SplitParameterSets(base.tiles[i]).pictures[0]) {
          reproduced =
              false;  // another x265 build, or a base coded with other options
          return absl::OkStatus();
        }
        delta.tiles[i] =
            Concat({sequence.parameter_sets, sequence.pictures[1]});
        return absl::OkStatus();
      });
  if (!encoded.ok()) return Annotate(encoded, name);
  if (!reproduced) return std::nullopt;
  delta.qp = p_qp;

  // Decode once, as the device will, to record what it must reproduce: a band
  // of tile rows at a time, hashed and measured in row order.
  Sha256Hasher hasher;
  FidelityMeter meter(qa, static_cast<size_t>(rows * cols));
  const int64_t band_rows = base.grid.tile_rows;
  // Bounded: one round per band.
  for (int64_t row0 = 0; row0 < rows; row0 += band_rows) {
    const int64_t n = std::min(band_rows, rows - row0);
    std::vector<int8_t> decoded(static_cast<size_t>(n * cols));
    const absl::Status band =
        DecodeDeltaBand(base, delta, row0, threads, absl::MakeSpan(decoded));
    if (!band.ok()) return Annotate(band, name);
    hasher.Update(AsBytes(decoded));
    absl::Status quantized;
    std::vector<int8_t> q;
    RETURN_IF_ERROR(ForEachRowChunk(
        target.rows, row0, n, cols, chunk_rows, name,
        [&](int64_t row, absl::Span<const float> values) {
          q.resize(values.size());
          quantized.Update(
              QuantizeRangeLike(name, qa, row * cols, values, q.data()));
          meter.Add(
              static_cast<size_t>(row * cols), values, q,
              absl::MakeConstSpan(decoded).subspan(
                  static_cast<size_t>((row - row0) * cols), values.size()));
        }));
    RETURN_IF_ERROR(quantized);  // rows that read otherwise the second time
  }
  delta.decoded_sha256 = hasher.Finish();
  delta.fidelity = meter.Finish(delta.PayloadBytes());
  return delta;
}

}  // namespace

absl::StatusOr<std::optional<PackedLayer>> EncodeLayerDeltaFromRows(
    const PackedLayer& base, const TensorRows& base_source,
    const TensorRows& target, int qp_offset, int threads,
    int64_t chunk_elements) {
  ASSIGN_OR_RETURN(const std::optional<DeltaInputs> in,
                   PrepareDelta(base, base_source, target, chunk_elements));
  if (!in) return std::nullopt;
  return CodeDelta(base, *in, base_source, target, qp_offset, threads);
}

absl::StatusOr<std::optional<PackedLayer>> EncodeLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    int qp_offset, int threads) {
  if (target.shape != base.shape || base_source.shape != base.shape)
    return std::nullopt;
  ASSIGN_OR_RETURN(const std::vector<float> a, ToFloat32(base_source));
  ASSIGN_OR_RETURN(const std::vector<float> b, ToFloat32(target));
  const int64_t cols = MatrixView(base.shape).second;
  return EncodeLayerDeltaFromRows(base, {base_source, RowsOfValues(a, cols)},
                                  {target, RowsOfValues(b, cols)}, qp_offset,
                                  threads);
}

absl::StatusOr<std::optional<PackedLayer>> EncodeMatchedLayerDeltaFromRows(
    const PackedLayer& base, const TensorRows& base_source,
    const TensorRows& target, double intra_sqnr_db, uint64_t max_bytes,
    int threads, int first_offset) {
  ASSIGN_OR_RETURN(const std::optional<DeltaInputs> in,
                   PrepareDelta(base, base_source, target, kRowChunkElements));
  if (!in) return std::nullopt;
  for (int offset = first_offset;
       offset >= first_offset - 12 && base.qp + offset >= 0; offset -= 3) {
    ASSIGN_OR_RETURN(
        std::optional<PackedLayer> delta,
        CodeDelta(base, *in, base_source, target, offset, threads));
    if (!delta || SerializePackedLayer(*delta).size() >= max_bytes)
      return std::nullopt;  // finer only costs more
    if (delta->fidelity.sqnr_db >= intra_sqnr_db) return delta;
  }
  return std::nullopt;
}

absl::StatusOr<std::optional<PackedLayer>> EncodeMatchedLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    double intra_sqnr_db, uint64_t max_bytes, int threads, int first_offset) {
  if (target.shape != base.shape || base_source.shape != base.shape)
    return std::nullopt;
  ASSIGN_OR_RETURN(const std::vector<float> a, ToFloat32(base_source));
  ASSIGN_OR_RETURN(const std::vector<float> b, ToFloat32(target));
  const int64_t cols = MatrixView(base.shape).second;
  return EncodeMatchedLayerDeltaFromRows(
      base, {base_source, RowsOfValues(a, cols)},
      {target, RowsOfValues(b, cols)}, intra_sqnr_db, max_bytes, threads,
      first_offset);
}

absl::StatusOr<RebuiltTensor> DecodeLayerDelta(
    absl::Span<const uint8_t> base_bytes, const PackedLayer& delta,
    int threads) {
  if (delta.codec != LayerCodec::kHevcDelta) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", delta.name, "' is not a delta layer"));
  }
  if (Sha256(base_bytes) != delta.base_sha256) {
    return absl::DataLossError(absl::StrCat(
        "layer '", delta.name,
        "': the held base is not the one the delta was made against (SHA-256 ",
        DigestToHex(Sha256(base_bytes)), ", expected ",
        DigestToHex(delta.base_sha256), ")"));
  }
  size_t consumed = 0;
  auto base = ParsePackedLayer(base_bytes, &consumed);
  if (!base.ok()) return Annotate(base.status(), delta.name);
  if (base->codec != LayerCodec::kHevc || base->shape != delta.shape ||
      !base->column_scales.empty() || !base->mosaic.empty()) {
    return absl::DataLossError(
        absl::StrCat("layer '", delta.name,
                     "': the base is not an HEVC layer of its shape "
                     "without column scales or a mosaic"));
  }
  auto values = DecodeDeltaTiles(*base, delta, threads);
  if (!values.ok()) return Annotate(values.status(), delta.name);
  if (Sha256(AsBytes(*values)) != delta.decoded_sha256) {
    return absl::DataLossError(absl::StrCat(
        "layer '", delta.name,
        "': SHA-256 of the delta-decoded data is not the recorded one"));
  }
  RebuiltTensor out;
  out.name = delta.name;
  out.shape = base->shape;
  out.int8 = QuantizedTensor{base->shape, base->scheme, std::move(*values),
                             base->scales, base->zero_points};
  return out;
}

}  // namespace weightcast
