#include "common/base/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace weightcast {

absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  ASSIGN_OR_RETURN(const uint64_t size, FileSize(path));
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()),
               static_cast<std::streamsize>(size))) {
    return absl::DataLossError(absl::StrCat(path, ": read failed"));
  }
  return bytes;
}

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  const std::streamsize size = in.tellg();
  if (size < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  return static_cast<uint64_t>(size);
}

absl::Status ReadFileInChunks(
    const std::string& path, size_t chunk_bytes,
    const std::function<bool(absl::Span<const uint8_t>)>& chunk) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  std::vector<uint8_t> buffer(std::max<size_t>(chunk_bytes, 1));
  // Bounded by the file's size: each round reads at least one byte or ends.
  while (true) {
    in.read(reinterpret_cast<char*>(buffer.data()),
            static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = in.gcount();
    if (got > 0 &&
        !chunk(absl::MakeConstSpan(buffer.data(), static_cast<size_t>(got))))
      return absl::OkStatus();
    if (in.eof()) return absl::OkStatus();
    if (!in) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  }
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const uint8_t> bytes) {
  const std::string temp = path + ".tmp";
  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::PermissionDeniedError(
        absl::StrCat(temp, ": cannot create: ", std::strerror(errno)));
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n =
        ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return absl::ResourceExhaustedError(
          absl::StrCat(temp, ": write failed: ", std::strerror(error)));
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed || std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": could not be completed: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
