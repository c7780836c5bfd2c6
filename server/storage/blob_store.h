// Content-addressed blob files under DIR/blobs/ab/abcdef… (SHA-256 hex). A blob
// is written to a temporary file, fsynced and renamed, so it is visible only
// once complete; temporaries left by a crash are removed by Open. Blobs are
// immutable. Thread-safe: concurrent Puts of the same content are harmless (the
// rename is atomic and the bytes are identical).
#ifndef WEIGHTCAST_SERVER_STORAGE_BLOB_STORE_H_
#define WEIGHTCAST_SERVER_STORAGE_BLOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// An open blob for reading in pieces (one open file per reader). Not
// thread-safe; one per stream.
class BlobReader {
 public:
  BlobReader(BlobReader&& other) noexcept
      : fd_(other.fd_), size_(other.size_), name_(std::move(other.name_)) {
    other.fd_ = -1;
  }
  ~BlobReader();
  uint64_t size() const { return size_; }
  // Replaces *out with bytes [offset, offset + length) (clamped to the end);
  // reuses its buffer.
  absl::Status ReadInto(uint64_t offset, uint64_t length, std::string* out);

 private:
  friend class BlobStore;
  BlobReader(int fd, uint64_t size, std::string name)
      : fd_(fd), size_(size), name_(std::move(name)) {}
  int fd_;
  uint64_t size_;
  std::string name_;
};

class BlobStore {
 public:
  // `shared`: replicas share the directory (a PostgreSQL registry), so Open
  // removes only temporaries older than an hour.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& dir,
                                                         bool shared = false);

  // Stores `bytes`; returns their SHA-256 (hex), the blob's name.
  absl::StatusOr<std::string> Put(absl::Span<const uint8_t> bytes);
  // Adopts a complete file (e.g. an upload) as a blob; the file is moved, not
  // copied.
  absl::StatusOr<std::string> Adopt(const std::string& path);

  bool Contains(const std::string& sha256) const;
  std::string PathOf(const std::string& sha256) const;
  absl::StatusOr<uint64_t> Size(const std::string& sha256) const;
  // Reads [offset, offset + length) of a blob; NOT_FOUND if absent,
  // OUT_OF_RANGE past its end.
  absl::StatusOr<std::vector<uint8_t>> Read(const std::string& sha256,
                                            uint64_t offset,
                                            uint64_t length) const;
  absl::StatusOr<BlobReader> OpenForRead(const std::string& sha256) const;
  absl::Status Remove(const std::string& sha256);

  // Where uploads in progress live (same filesystem, so Adopt is a rename).
  std::string TempPath(const std::string& stem) const;

 private:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string dir_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_BLOB_STORE_H_
