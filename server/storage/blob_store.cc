#include "server/storage/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace fs = std::filesystem;
namespace {

bool IsHexDigest(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::atomic<uint64_t> temp_counter{0};

// Names this process's temporaries apart from those of replicas on other
// hosts sharing the directory (their pids may be equal).
const std::string& ProcessToken() {
  static const std::string* token = [] {
    std::random_device random;
    return new std::string(absl::StrCat(absl::Hex(random(), absl::kZeroPad8)));
  }();
  return *token;
}

// Temporaries a crash left: with the directory shared by replicas, only those
// older than an hour (another replica may be writing the younger ones).
bool Stale(const fs::directory_entry& entry, bool shared) {
  if (!shared) return true;
  std::error_code error;
  const auto written = fs::last_write_time(entry.path(), error);
  return !error &&
         fs::file_time_type::clock::now() - written > std::chrono::hours(1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(
    const std::string& dir, bool shared) {
  std::error_code error;
  fs::create_directories(fs::path(dir) / "blobs", error);
  fs::create_directories(fs::path(dir) / "tmp", error);
  if (error)
    return absl::UnavailableError(absl::StrCat(
        dir, ": cannot create blob directories: ", error.message()));
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "tmp", error))
    if (Stale(entry, shared)) fs::remove_all(entry.path(), error);
  // A crash between write and rename leaves only *.tmp files beside blobs: drop
  // them.
  for (const auto& entry :
       fs::recursive_directory_iterator(fs::path(dir) / "blobs", error)) {
    if (entry.path().extension() == ".tmp" && Stale(entry, shared))
      fs::remove(entry.path(), error);
  }
  return std::unique_ptr<BlobStore>(new BlobStore(dir));
}

std::string BlobStore::PathOf(const std::string& sha256) const {
  return (fs::path(dir_) / "blobs" / sha256.substr(0, 2) / sha256).string();
}

std::string BlobStore::TempPath(const std::string& stem) const {
  return (fs::path(dir_) / "tmp" /
          absl::StrCat(stem, ".", getpid(), ".", ProcessToken(), ".",
                       temp_counter.fetch_add(1)))
      .string();
}

absl::StatusOr<std::string> BlobStore::Put(absl::Span<const uint8_t> bytes) {
  const std::string sha = DigestToHex(Sha256(bytes));
  if (Contains(sha)) return sha;
  std::error_code error;
  fs::create_directories(fs::path(PathOf(sha)).parent_path(), error);
  // Written under a name of this process's own in tmp/, then renamed into
  // place: replicas sharing the directory may store the same blob at once.
  const std::string temp = TempPath("put");
  RETURN_IF_ERROR(WriteFileAtomically(temp, bytes));
  fs::rename(temp, PathOf(sha), error);
  if (error) {
    fs::remove(temp, error);
    return absl::ResourceExhaustedError(
        absl::StrCat("blob ", sha, ": cannot move into place"));
  }
  return sha;
}

absl::StatusOr<std::string> BlobStore::Adopt(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  Sha256Hasher hasher;
  std::vector<char> buffer(1 << 20);
  while (in.read(buffer.data(), buffer.size()) || in.gcount() > 0) {
    hasher.Update(absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(buffer.data()), in.gcount()));
  }
  const std::string sha = DigestToHex(hasher.Finish());
  std::error_code error;
  fs::create_directories(fs::path(PathOf(sha)).parent_path(), error);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  fs::rename(path, PathOf(sha), error);
  if (error)
    return absl::ResourceExhaustedError(absl::StrCat(
        path, ": cannot move into the blob store: ", error.message()));
  return sha;
}

bool BlobStore::Contains(const std::string& sha256) const {
  std::error_code error;
  return IsHexDigest(sha256) && fs::is_regular_file(PathOf(sha256), error);
}

absl::StatusOr<uint64_t> BlobStore::Size(const std::string& sha256) const {
  std::error_code error;
  if (!IsHexDigest(sha256))
    return absl::InvalidArgumentError("not a blob name");
  const uint64_t size = fs::file_size(PathOf(sha256), error);
  if (error)
    return absl::NotFoundError(absl::StrCat("blob ", sha256, " is missing"));
  return size;
}

absl::StatusOr<std::vector<uint8_t>> BlobStore::Read(const std::string& sha256,
                                                     uint64_t offset,
                                                     uint64_t length) const {
  ASSIGN_OR_RETURN(const uint64_t size, Size(sha256));
  if (offset > size)
    return absl::OutOfRangeError(absl::StrCat(
        "offset ", offset, " is past the blob's ", size, " bytes"));
  length = std::min(length, size - offset);
  const int fd = ::open(PathOf(sha256).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(
        absl::StrCat("blob ", sha256, ": ", std::strerror(errno)));
  std::vector<uint8_t> out(length);
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd, out.data() + done, length - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (done != length)
    return absl::DataLossError(
        absl::StrCat("blob ", sha256, " is shorter than recorded"));
  return out;
}

BlobReader::~BlobReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status BlobReader::ReadInto(uint64_t offset, uint64_t length,
                                  std::string* out) {
  if (offset > size_)
    return absl::OutOfRangeError(absl::StrCat(
        "offset ", offset, " is past the blob's ", size_, " bytes"));
  length = std::min(length, size_ - offset);
  out->resize(length);
  size_t done = 0;
  while (done < length) {
    const ssize_t n = ::pread(fd_, out->data() + done, length - done,
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (done != length)
    return absl::DataLossError(
        absl::StrCat("blob ", name_, " is shorter than recorded"));
  return absl::OkStatus();
}

absl::StatusOr<BlobReader> BlobStore::OpenForRead(
    const std::string& sha256) const {
  ASSIGN_OR_RETURN(const uint64_t size, Size(sha256));
  const int fd = ::open(PathOf(sha256).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(
        absl::StrCat("blob ", sha256, ": ", std::strerror(errno)));
  return BlobReader(fd, size, sha256);
}

absl::Status BlobStore::Remove(const std::string& sha256) {
  std::error_code error;
  if (IsHexDigest(sha256)) fs::remove(PathOf(sha256), error);
  return absl::OkStatus();
}

}  // namespace weightcast
