// Writes verified layers into a streamed output (streaming_writer.h) as the
// output's kind lays them out (checkpoint.h's rule): a whole layer as the
// decode pool's Sink, or a multi-tile int8 layer a band of rows at a time as
// its RowsWriter, so that neither holds a float copy of a layer and the band
// path no whole layer at all. Internal to client/sdk.
// Thread-safe as the writer is: distinct layers on distinct threads.
#ifndef WEIGHTCAST_CLIENT_SDK_LAYER_OUTPUT_H_
#define WEIGHTCAST_CLIENT_SDK_LAYER_OUTPUT_H_

#include <memory>

#include "absl/status/statusor.h"
#include "client/sdk/decode_pool.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/streaming_writer.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"

namespace weightcast {

class LayerOutput {
 public:
  // `writer` must outlive this and every RowsWriter it returns.
  LayerOutput(CheckpointStreamWriter* writer, OutputKind kind)
      : writer_(writer), kind_(kind) {}

  // A whole verified layer: int8 layers of a float output dequantized a slice
  // at a time (Dequantize's formula, the outliers' values over them).
  absl::Status Write(const RebuiltTensor& tensor) const;

  // The rows of intra HEVC layer `layer` as its tiles are decoded: the same
  // bytes Write gives for the whole layer. DATA_LOSS naming the layer when
  // its scales, zero points or outliers do not fit its shape.
  absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> BeginRows(
      const PackedLayer& layer) const;

 private:
  CheckpointStreamWriter* const writer_;
  const OutputKind kind_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_LAYER_OUTPUT_H_
