// libFuzzer target: a packed layer as a client receives it: parse the WCL1
// bytes, and when they parse, decode the layer (zstd, HEVC tiles through
// libde265, SHA-256 check), and rebuild its float tensor (outliers put back).
// Errors are fine; crashes, hangs and out-of-bounds
// reads are not.
#include <cstddef>
#include <cstdint>

#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t consumed = 0;
  auto layer =
      weightcast::ParsePackedLayer(absl::MakeConstSpan(data, size), &consumed);
  if (!layer.ok()) return 0;
  auto rebuilt = weightcast::DecodeLayer(*layer, /*threads=*/1);
  if (rebuilt.ok()) (void)rebuilt->ToFloatTensor();
  return 0;
}
