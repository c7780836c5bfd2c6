// The libde265 wrapper: decodes one tile's HEVC bitstream (one picture, or a
// sequence of them) back to 8-bit luma planes. The only file that includes
// libde265's headers. libde265's rule is one decoder context per thread;
// DecodeIntraPicture owns a context for the duration of the call, so it may be
// called from any number of threads at once. Bitstreams are untrusted:
// malformed or truncated input is an error, never a crash.
#ifndef WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_
#define WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/hevc/picture.h"

namespace weightcast {

// Decodes exactly one monochrome 8-bit picture of width × height from
// `bitstream`. DATA_LOSS when the bitstream is damaged, holds no picture, more
// than one, or another size.
absl::StatusOr<Plane> DecodeIntraPicture(absl::Span<const uint8_t> bitstream,
                                         int width, int height);

// Decodes a sequence of 1..max_pictures monochrome 8-bit pictures of width ×
// height (an IDR picture and the P pictures predicted from it), in output
// order. DATA_LOSS as above. A P picture decoded after the wrong reference
// picture is not an error to libde265: it decodes to other values, so a caller
// checks what it decodes against with a digest.
absl::StatusOr<std::vector<Plane>> DecodeSequence(
    absl::Span<const uint8_t> bitstream, int width, int height,
    int max_pictures);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_DE265_DECODER_H_
