// Packs one tensor into a PackedLayer with a given codec, and decodes one back.
// Encoding quantizes, codes every tile (in parallel), then decodes what it coded once to record
// the exact SHA-256 and fidelity a client will see. Stateless; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_
#define WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {

struct LayerEncodeOptions {
  LayerCodec codec = LayerCodec::kHevc;
  QuantScheme scheme = QuantScheme::kPerTensorSymmetric;
  HevcEncodeOptions hevc;  // HEVC only
  int max_tile_size = kDefaultMaxTileSize;
  int threads = 0;  // tiles coded at once; 0 = one per core
};

absl::StatusOr<PackedLayer> EncodeLayer(const Tensor& tensor, const LayerEncodeOptions& options);

// What a packed layer decodes to: int8 values with their scales, or the stored tensor.
struct DecodedLayer {
  std::string name;
  std::vector<int64_t> shape;
  std::optional<QuantizedTensor> int8;  // int8 codecs
  Tensor stored;                        // float and passthrough codecs: the tensor as stored

  // The tensor a float model is rebuilt from: dequantized int8, or the stored tensor with
  // float16 widened to float32.
  absl::StatusOr<Tensor> ToFloatTensor() const;
};

// Decodes all tiles (in parallel) and checks the SHA-256 recorded in the header.
// DATA_LOSS naming the layer when a bitstream is damaged or the digest does not match.
absl::StatusOr<DecodedLayer> DecodeLayer(const PackedLayer& layer, int threads = 0);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_LAYER_CODEC_H_
