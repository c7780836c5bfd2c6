#include "common/pack/delta_codec.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "common/base/parallel_for.h"
#include "common/base/status_macros.h"
#include "common/hevc/de265_decoder.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
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

// B's int8 matrix: per tile, [delta parameter sets, A's slices, B's P picture]
// decoded, the second picture kept.
absl::StatusOr<std::vector<int8_t>> DecodeDeltaTiles(const PackedLayer& base,
                                                     const PackedLayer& delta,
                                                     int threads) {
  if (delta.tiles.size() != base.tiles.size() ||
      delta.grid.rows != base.grid.rows || delta.grid.cols != base.grid.cols ||
      delta.grid.tile_rows != base.grid.tile_rows ||
      delta.grid.tile_cols != base.grid.tile_cols) {
    return absl::DataLossError(
        absl::StrCat(delta.tiles.size(), " delta tiles do not fit a base of ",
                     base.tiles.size()));
  }
  std::vector<int8_t> values(
      static_cast<size_t>(base.grid.rows * base.grid.cols));
  RETURN_IF_ERROR(
      ParallelFor(base.tiles.size(), threads, [&](size_t i) -> absl::Status {
        const TileRect rect = base.grid.Tile(i);
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
        InsertTile((*pictures)[1], rect, base.grid.cols,
                   absl::MakeSpan(values));
        return absl::OkStatus();
      }));
  return values;
}

absl::Status Annotate(const absl::Status& status, absl::string_view layer) {
  return absl::Status(
      status.code(),
      absl::StrCat("layer '", layer, "' (delta): ", status.message()));
}

}  // namespace

absl::StatusOr<std::optional<PackedLayer>> EncodeLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    int qp_offset, int threads) {
  if (base.codec != LayerCodec::kHevc || base.lossless ||
      !base.outliers.empty() || target.shape != base.shape ||
      base_source.shape != base.shape) {
    return std::nullopt;
  }
  ASSIGN_OR_RETURN(const std::vector<float> a, ToFloat32(base_source));
  ASSIGN_OR_RETURN(const std::vector<float> b, ToFloat32(target));
  ASSIGN_OR_RETURN(const QuantizedTensor qa,
                   Quantize(base.name, base.shape, a, base.scheme));
  if (qa.scales != base.scales || qa.zero_points != base.zero_points) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", base.name,
                     "': the base source is not what the base was coded from"));
  }
  auto qb = QuantizeLike(target.name, b, qa);
  if (!qb.ok()) return std::nullopt;  // B outgrew A's scale: it is sent whole

  const HevcEncodeOptions options{.qp = base.qp,
                                  .lossless = false,
                                  .preset = base.preset,
                                  .tools = base.tools};
  const int p_qp = base.qp + qp_offset;
  if (p_qp < 0 || p_qp > 51)
    return absl::InvalidArgumentError(
        absl::StrCat("delta QP ", p_qp, " is outside 0..51"));
  PackedLayer delta = base;  // grid, scales, QP, preset, dtype
  delta.name = target.name;
  delta.codec = LayerCodec::kHevcDelta;
  delta.source_dtype = target.dtype;
  delta.base_sha256 = Sha256(SerializePackedLayer(base));
  delta.tiles.assign(base.tiles.size(), {});
  std::atomic<bool> reproduced{true};
  const int64_t cols = base.grid.cols;
  absl::Status encoded =
      ParallelFor(base.tiles.size(), threads, [&](size_t i) -> absl::Status {
        const TileRect rect = base.grid.Tile(i);
        const Plane pa = ExtractTile(qa.values, cols, rect);
        const Plane pb = ExtractTile(qb->values, cols, rect);
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
  if (!encoded.ok()) return Annotate(encoded, target.name);
  if (!reproduced) return std::nullopt;
  delta.qp = p_qp;

  // Decode once, as the device will, to record what it must reproduce.
  auto values = DecodeDeltaTiles(base, delta, threads);
  if (!values.ok()) return Annotate(values.status(), target.name);
  delta.decoded_sha256 = Sha256(AsBytes(*values));
  delta.fidelity = MeasureFidelity(b, *qb, *values, delta.PayloadBytes());
  return delta;
}

absl::StatusOr<std::optional<PackedLayer>> EncodeMatchedLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    double intra_sqnr_db, uint64_t max_bytes, int threads, int first_offset) {
  for (int offset = first_offset;
       offset >= first_offset - 12 && base.qp + offset >= 0; offset -= 3) {
    ASSIGN_OR_RETURN(
        std::optional<PackedLayer> delta,
        EncodeLayerDelta(base, base_source, target, offset, threads));
    if (!delta || SerializePackedLayer(*delta).size() >= max_bytes)
      return std::nullopt;  // finer only costs more
    if (delta->fidelity.sqnr_db >= intra_sqnr_db) return delta;
  }
  return std::nullopt;
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
  if (base->codec != LayerCodec::kHevc || base->shape != delta.shape) {
    return absl::DataLossError(
        absl::StrCat("layer '", delta.name,
                     "': the base is not an HEVC layer of its shape"));
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
