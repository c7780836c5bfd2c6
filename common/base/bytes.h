// The bytes of a contiguous array of plain values (little-endian on every
// platform weightcast builds for), as the checkpoint writers take them.
#ifndef WEIGHTCAST_COMMON_BASE_BYTES_H_
#define WEIGHTCAST_COMMON_BASE_BYTES_H_

#include <cstdint>
#include <type_traits>

#include "absl/types/span.h"

namespace weightcast {

template <typename T>
absl::Span<const uint8_t> AsBytes(absl::Span<const T> values) {
  static_assert(std::is_trivially_copyable_v<T>);
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(values.data()),
                             values.size() * sizeof(T));
}

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_BYTES_H_
