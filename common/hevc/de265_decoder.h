// The libde265 wrapper: decodes one tile's HEVC bitstream back to an 8-bit luma plane.
// The only file that includes libde265's headers. libde265's rule is one decoder context per
// thread; DecodeIntraPicture owns a context for the duration of the call, so it may be called
// from any number of threads at once. Bitstreams are untrusted: malformed or truncated input is
// an error, never a crash.
#ifndef WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_
#define WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/hevc/picture.h"

namespace weightcast {

// Decodes exactly one monochrome 8-bit picture of width × height from `bitstream`.
// DATA_LOSS when the bitstream is damaged, holds no picture, more than one, or another size.
absl::StatusOr<Plane> DecodeIntraPicture(absl::Span<const uint8_t> bitstream, int width, int height);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_
