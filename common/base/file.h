// Whole-file reads, reads a chunk at a time, and crash-safe whole-file writes.
// Thread-safe for distinct paths.
#ifndef WEIGHTCAST_COMMON_BASE_FILE_H_
#define WEIGHTCAST_COMMON_BASE_FILE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// NOT_FOUND when the file cannot be opened; the error names the path.
absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);

// The size of the regular file at `path`: NOT_FOUND when it cannot be opened,
// INVALID_ARGUMENT when it is not a regular file.
absl::StatusOr<uint64_t> FileSize(const std::string& path);
// Reads `path` from its start in chunks of at most `chunk_bytes`, handing each
// to `chunk` (valid during the call) until the end or until `chunk` returns
// false: memory is one chunk, whatever the file's size. Errors as
// ReadFileBytes'.
absl::Status ReadFileInChunks(
    const std::string& path, size_t chunk_bytes,
    const std::function<bool(absl::Span<const uint8_t>)>& chunk);

// Writes PATH.tmp, fsyncs, renames over PATH: a crash never leaves a
// half-written file under the final name. RESOURCE_EXHAUSTED (naming the path)
// when the disk is full.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const uint8_t> bytes);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_FILE_H_
