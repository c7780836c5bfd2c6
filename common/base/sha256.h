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

// Incremental hashing of data that arrives in pieces. Not thread-safe; movable,
// not copyable.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(absl::Span<const uint8_t> data);
  Sha256Digest Finish();  // once

 private:
  void* ctx_;  // EVP_MD_CTX, owned
};

// Lower-case hexadecimal, 64 characters.
std::string DigestToHex(const Sha256Digest& digest);

// The raw 32 bytes a 64-character lower-case hex name (a blob's) stands for, as
// a string (what protobuf bytes fields carry); empty when `hex` is not such a
// name.
std::string HexToRawDigest(const std::string& hex);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_SHA256_H_
