// Deltas between two versions of one layer at one HEVC tier: a device that
// holds version A's packed layer gets version B as P pictures predicted from
// A's pictures, which it has decoded already.
//
// B is quantized with A's scales (an unchanged weight keeps its pixel), and
// each tile is coded as the two-picture sequence [A, B] at A's QP and preset.
// x265 codes picture 0 byte for byte as it coded A's stored tile
// (EncodeSequence); this is checked per tile, and without it there is no delta.
// The device decodes [the delta's parameter sets, A's stored slices, B's P
// picture]: exactly what the encoder reconstructed, recorded as a SHA-256. So B
// "at this tier, after A" has one definition however it arrives. Stateless;
// thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_DELTA_CODEC_H_
#define WEIGHTCAST_COMMON_PACK_DELTA_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/base/sha256.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {

// The result is a PackedLayer of codec kHevcDelta: A's grid, scales, QP and
// preset; base_sha256 = SHA-256 of A's serialized layer (what the device must
// hold); per tile the sequence's parameter sets and B's P picture;
// decoded_sha256 and fidelity of B as the device decodes it.

// Codes `target` (B) against `base` (A's packed HEVC layer, coded from
// `base_source`), B's P pictures at A's QP + `qp_offset` (a negative offset
// spends bytes to keep B's fidelity: a P picture at A's QP skips blocks that
// moved less than the quantizer step, so B drifts to A). nullopt when B cannot
// be: another shape, a lossless or non-HEVC base, a value of B outside A's
// scale range, or a tile x265 did not reproduce. Errors: `base_source` is not
// what `base` was coded from; encoder failures.
absl::StatusOr<std::optional<PackedLayer>> EncodeLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    int qp_offset = 0, int threads = 0);

// A tensor read a chunk of rows at a time: its header (name, shape, dtype;
// data unused) and its rows as float32.
struct TensorRows {
  const Tensor& header;
  FloatRowReader rows;
};
// EncodeLayerDelta, byte for byte, from A's source and B read about
// `chunk_elements` at a time (a pass for A's scales, one for B's range, then
// each tile's rows when its job runs and each band's for the fidelity):
// memory follows the tiles in progress and one band, never a whole tensor.
absl::StatusOr<std::optional<PackedLayer>> EncodeLayerDeltaFromRows(
    const PackedLayer& base, const TensorRows& base_source,
    const TensorRows& target, int qp_offset = 0, int threads = 0,
    int64_t chunk_elements = kRowChunkElements);

// The delta a server stores: the coarsest P-picture QP (A's QP +
// `first_offset`, then 3, 6, ... 12 below it) whose reconstruction of B has at
// least `intra_sqnr_db` (the SQNR of B coded on its own at this tier), so that
// B at this tier keeps the fidelity the tier promises; nullopt when no such
// delta is smaller than `max_bytes` (B coded on its own is then the better
// choice). At A's own QP a P picture skips every block that moved less than the
// quantizer step, and a fine-tune's changes mostly do: B would drift back to A.
// A refinement of a coarse tier to a finer one is the case B = A's source,
// `first_offset` = fine QP - coarse QP.
absl::StatusOr<std::optional<PackedLayer>> EncodeMatchedLayerDelta(
    const PackedLayer& base, const Tensor& base_source, const Tensor& target,
    double intra_sqnr_db, uint64_t max_bytes, int threads = 0,
    int first_offset = 0);
// The same from rows (EncodeLayerDeltaFromRows for each QP tried).
absl::StatusOr<std::optional<PackedLayer>> EncodeMatchedLayerDeltaFromRows(
    const PackedLayer& base, const TensorRows& base_source,
    const TensorRows& target, double intra_sqnr_db, uint64_t max_bytes,
    int threads = 0, int first_offset = 0);

// B from the bytes of A's serialized packed layer and the delta. DATA_LOSS
// naming the layer when the base is not the one the delta was made against (its
// SHA-256), a bitstream is damaged, or the result's SHA-256 is not the recorded
// one.
absl::StatusOr<RebuiltTensor> DecodeLayerDelta(
    absl::Span<const uint8_t> base_bytes, const PackedLayer& delta,
    int threads = 0);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_DELTA_CODEC_H_
