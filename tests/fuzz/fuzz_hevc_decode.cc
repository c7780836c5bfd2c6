// libFuzzer target: the libde265 wrapper on an arbitrary bitstream. The first
// byte picks the expected picture size (32..256 in steps of 32, square), the
// rest is the bitstream.
#include <cstddef>
#include <cstdint>

#include "common/hevc/de265_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int side = 32 * (1 + data[0] % 8);
  (void)weightcast::DecodeIntraPicture(absl::MakeConstSpan(data + 1, size - 1),
                                       side, side);
  return 0;
}
