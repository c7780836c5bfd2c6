// SHA-256 digests, the identity of decoded int8 data and of stored blobs.
// The only file that includes OpenSSL's headers. Thread-safe: no shared state.
#ifndef WEIGHTCAST_COMMON_BASE_SHA256_H_
#define WEIGHTCAST_COMMON_BASE_SHA256_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace weightcast {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(absl::Span<const uint8_t> data);

// Lower-case hexadecimal, 64 characters.
std::string DigestToHex(const Sha256Digest& digest);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_SHA256_H_
