#include "server/core/layer_encoder.h"

#include "common/pack/delta_codec.h"

namespace weightcast {
namespace {

class X265 final : public LayerEncoder {
 public:
  absl::StatusOr<PackedLayer> Encode(
      const Tensor& tensor, const LayerEncodeOptions& options) const override {
    return EncodeLayer(tensor, options);
  }
  absl::StatusOr<PackedLayer> EncodeSource(
      const Source& source, const LayerEncodeOptions& options) const override {
    // Column scales and mosaics are coded from the whole tensor (EncodeLayer);
    // a mosaic is looked for in tensors of up to kMaxFindMosaicElements.
    LayerEncodeOptions bounded = options;
    bounded.find_mosaic &=
        source.header.NumElements() <= kMaxFindMosaicElements;
    if (IsInt8Codec(options.codec) && IsFloatingPoint(source.header.dtype) &&
        source.header.NumElements() > 0 && options.column_scales.empty() &&
        options.mosaic.empty() && !bounded.find_mosaic) {
      return EncodeLayerFromRows(source.header, source.rows, bounded);
    }
    return LayerEncoder::EncodeSource(source, bounded);
  }
  absl::StatusOr<std::optional<PackedLayer>> EncodeDelta(
      const PackedLayer& base, const Tensor& base_source, const Tensor& target,
      double intra_sqnr_db, uint64_t max_bytes,
      int first_offset) const override {
    return EncodeMatchedLayerDelta(base, base_source, target, intra_sqnr_db,
                                   max_bytes, /*threads=*/1, first_offset);
  }
  absl::StatusOr<std::optional<PackedLayer>> EncodeDeltaSource(
      const PackedLayer& base, const Source& base_source, const Source& target,
      double intra_sqnr_db, uint64_t max_bytes,
      int first_offset) const override {
    return EncodeMatchedLayerDeltaFromRows(
        base, {base_source.header, base_source.rows},
        {target.header, target.rows}, intra_sqnr_db, max_bytes,
        /*threads=*/1, first_offset);
  }
};

}  // namespace

absl::StatusOr<PackedLayer> LayerEncoder::EncodeSource(
    const Source& source, const LayerEncodeOptions& options) const {
  absl::StatusOr<Tensor> tensor = source.read();
  if (!tensor.ok()) return tensor.status();
  return Encode(*tensor, options);
}

absl::StatusOr<std::optional<PackedLayer>> LayerEncoder::EncodeDeltaSource(
    const PackedLayer& base, const Source& base_source, const Source& target,
    double intra_sqnr_db, uint64_t max_bytes, int first_offset) const {
  absl::StatusOr<Tensor> whole_base = base_source.read();
  if (!whole_base.ok()) return whole_base.status();
  absl::StatusOr<Tensor> whole_target = target.read();
  if (!whole_target.ok()) return whole_target.status();
  return EncodeDelta(base, *whole_base, *whole_target, intra_sqnr_db, max_bytes,
                     first_offset);
}

const LayerEncoder& X265LayerEncoder() {
  static const X265* const encoder = new X265;
  return *encoder;
}

}  // namespace weightcast
