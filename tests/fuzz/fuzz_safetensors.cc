// libFuzzer target: the safetensors reader on arbitrary bytes must return a
// model or an error, never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "common/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)weightcast::ParseSafetensors(absl::MakeConstSpan(data, size), "fuzz");
  return 0;
}
