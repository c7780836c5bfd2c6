// Annex-B framing: an HEVC byte stream is NAL units, each after a 00 00 01
// start code (with a leading zero byte for parameter sets and a picture's first
// unit). Pure functions.
#ifndef WEIGHTCAST_COMMON_HEVC_NAL_UNITS_H_
#define WEIGHTCAST_COMMON_HEVC_NAL_UNITS_H_

#include <cstdint>
#include <functional>

#include "absl/types/span.h"

namespace weightcast {

// Calls `fn` with each NAL unit of `bitstream` (its start code included) and
// its nal_unit_type
// (-1 when the unit is too short to have a header). Bytes before the first
// start code are skipped.
void ForEachNalUnit(
    absl::Span<const uint8_t> bitstream,
    const std::function<void(absl::Span<const uint8_t> unit, int type)>& fn);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_NAL_UNITS_H_
