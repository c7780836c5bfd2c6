// Whole-file reads and crash-safe whole-file writes. Thread-safe for distinct
// paths.
#ifndef WEIGHTCAST_COMMON_BASE_FILE_H_
#define WEIGHTCAST_COMMON_BASE_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// NOT_FOUND when the file cannot be opened; the error names the path.
absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);

// Writes PATH.tmp, fsyncs, renames over PATH: a crash never leaves a
// half-written file under the final name. RESOURCE_EXHAUSTED (naming the path)
// when the disk is full.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const uint8_t> bytes);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_FILE_H_
