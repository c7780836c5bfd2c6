// The x265 wrapper: encodes one picture as an all-intra HEVC bitstream at a constant QP.
// The only file that includes x265.h. x265's rule is one encoder per thread, never reused after
// flush; EncodeIntraPicture opens, uses and closes its own encoder, so it may be called from any
// number of threads at once.
#ifndef WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_
#define WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/hevc/picture.h"

namespace weightcast {

// The preset the project measured as the best bytes-per-second trade (docs/BENCHMARKS.md).
inline constexpr char kDefaultX265Preset[] = "veryfast";

struct HevcEncodeOptions {
  int qp = 27;             // 0..51; the QP every CTU is coded at (rc.ipFactor = 1.0)
  bool lossless = false;   // bit-exact; qp is ignored
  std::string preset = kDefaultX265Preset;  // x265 preset name: ultrafast … placebo
};

// Encodes `plane` (width and height multiples of kMinCuSize, at least kCtuSize) as one IDR
// picture with its parameter sets, Annex-B framed. Errors: bad options or picture size.
absl::StatusOr<std::vector<uint8_t>> EncodeIntraPicture(const Plane& plane,
                                                        const HevcEncodeOptions& options);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_
