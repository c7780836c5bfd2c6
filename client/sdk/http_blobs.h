// Downloads packed layers over HTTP from a blob endpoint (weightcastd
// --blob-listen, or nginx or a CDN in front of it): GET
// <base_url>/v1/blobs/<sha256 hex>, resuming an interrupted transfer with
// Range, and checks the blob's SHA-256 before handing it out. The libcurl
// wrapper: the only file that includes curl/curl.h. Internal to client/sdk.
// One HttpBlobs per pull (it keeps one connection alive across layers); not
// thread-safe. Whatever the server sends (wrong length, wrong bytes, wrong
// status) ends in an error, never in more memory than the expected size.
#ifndef WEIGHTCAST_CLIENT_SDK_HTTP_BLOBS_H_
#define WEIGHTCAST_CLIENT_SDK_HTTP_BLOBS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace weightcast {

struct HttpBlobsOptions {
  std::string base_url;  // http:// or https://, no trailing slash needed
  // Sent as the Authorization header when set ("Bearer TOKEN").
  std::string authorization;
  absl::Duration connect_timeout = absl::Seconds(5);
  // A transfer that moves no byte for this long is dropped (and resumed).
  absl::Duration stall_timeout = absl::Seconds(10);
  // Transfers per blob (the first and the resumes) before giving up.
  int attempts = 3;
  double max_bytes_per_second = 0;            // 0: unlimited
  const std::atomic<bool>* cancel = nullptr;  // must outlive the HttpBlobs
};

class HttpBlobs {
 public:
  explicit HttpBlobs(HttpBlobsOptions options);
  ~HttpBlobs();
  HttpBlobs(const HttpBlobs&) = delete;
  HttpBlobs& operator=(const HttpBlobs&) = delete;

  // Completes *bytes (which may hold a prefix of the blob from an earlier
  // transfer) to the blob named `sha256` (raw 32-byte digest) of
  // `expected_size` bytes, and checks its SHA-256. UNAVAILABLE after
  // `attempts` failed transfers; DATA_LOSS when the whole does not match the
  // digest (*bytes is then cleared); CANCELLED. `arriving`, when set, is
  // called on this thread with *bytes after each piece of the body is
  // appended: the blob's first bytes so far, unchecked (a server that ignores
  // Range restarts them from the first byte).
  using Arriving = std::function<void(absl::string_view bytes)>;
  absl::Status Fetch(absl::string_view sha256, uint64_t expected_size,
                     std::string* bytes, const Arriving& arriving = nullptr);

  // Transfers started (for tests and benchmarks).
  int transfers() const { return transfers_; }

 private:
  const HttpBlobsOptions options_;
  void* curl_ = nullptr;  // CURL*, reused across transfers
  int transfers_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_HTTP_BLOBS_H_
