// The zstd wrapper: int8 payloads as one zstd frame. The only file that
// includes zstd.h. Thread-safe: every call uses its own context.
#ifndef WEIGHTCAST_COMMON_PACK_ZSTD_CODEC_H_
#define WEIGHTCAST_COMMON_PACK_ZSTD_CODEC_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// Level 3: on int8 weights level 19 was no smaller and 150x slower
// (docs/BENCHMARKS.md).
inline constexpr int kDefaultZstdLevel = 3;

std::vector<uint8_t> ZstdCompress(absl::Span<const uint8_t> data,
                                  int level = kDefaultZstdLevel);

// Decompresses a frame that must hold exactly `expected_size` bytes; checks the
// frame's declared size before allocating. DATA_LOSS on any mismatch or damage.
absl::StatusOr<std::vector<uint8_t>> ZstdDecompress(
    absl::Span<const uint8_t> frame, uint64_t expected_size);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_ZSTD_CODEC_H_
