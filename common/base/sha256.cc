#include "common/base/sha256.h"

#include <openssl/evp.h>

#include <cassert>

namespace weightcast {

Sha256Digest Sha256(absl::Span<const uint8_t> data) {
  Sha256Digest digest{};
  unsigned int length = 0;
  int ok = EVP_Digest(data.data(), data.size(), digest.data(), &length,
                      EVP_sha256(), nullptr);
  assert(ok == 1 && length == digest.size());
  (void)ok;
  return digest;
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

Sha256Hasher::~Sha256Hasher() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256Hasher::Update(absl::Span<const uint8_t> data) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}

Sha256Digest Sha256Hasher::Finish() {
  Sha256Digest digest{};
  unsigned int length = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), digest.data(), &length);
  return digest;
}

std::string HexToRawDigest(const std::string& hex) {
  if (hex.size() != 64) return "";
  std::string raw;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int byte = 0;
    for (char c : {hex[i], hex[i + 1]}) {
      const int nibble = c >= '0' && c <= '9'   ? c - '0'
                         : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                : -1;
      if (nibble < 0) return "";
      byte = byte * 16 + nibble;
    }
    raw.push_back(static_cast<char>(byte));
  }
  return raw;
}

std::string DigestToHex(const Sha256Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(digest.size() * 2);
  for (uint8_t byte : digest) {
    hex.push_back(kHex[byte >> 4]);
    hex.push_back(kHex[byte & 0xf]);
  }
  return hex;
}

}  // namespace weightcast
