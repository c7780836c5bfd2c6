#include "common/pack/zstd_codec.h"

#include <zstd.h>

#include <cassert>

#include "absl/strings/str_cat.h"

namespace weightcast {

std::vector<uint8_t> ZstdCompress(absl::Span<const uint8_t> data, int level) {
  std::vector<uint8_t> out(ZSTD_compressBound(data.size()));
  const size_t size =
      ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  assert(!ZSTD_isError(size));  // cannot fail with a bound-sized buffer
  out.resize(size);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> ZstdDecompress(
    absl::Span<const uint8_t> frame, uint64_t expected_size) {
  const unsigned long long declared =
      ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared != expected_size) {
    return absl::DataLossError(absl::StrCat(
        "zstd frame declares ",
        declared == ZSTD_CONTENTSIZE_ERROR ? "an error"
                                           : absl::StrCat(declared),
        " bytes, expected ", expected_size));
  }
  std::vector<uint8_t> out(expected_size);
  const size_t size =
      ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(size) || size != expected_size) {
    return absl::DataLossError(absl::StrCat(
        "zstd frame damaged: ",
        ZSTD_isError(size) ? ZSTD_getErrorName(size) : "short output"));
  }
  return out;
}

}  // namespace weightcast
