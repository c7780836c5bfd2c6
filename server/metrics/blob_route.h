// What `GET|HEAD /v1/blobs/<sha256>` answers, decided from the request's
// method, path and headers and the blob's size alone: no I/O and no civetweb,
// so every rule is unit-tested (blob_route_test.cc). Blobs are immutable and
// named by their SHA-256, so the ETag is the digest and every answer may be
// cached for a year (RFC 9111 `immutable`). Pure functions; thread-safe.
#ifndef WEIGHTCAST_SERVER_METRICS_BLOB_ROUTE_H_
#define WEIGHTCAST_SERVER_METRICS_BLOB_ROUTE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace weightcast {

inline constexpr absl::string_view kBlobPathPrefix = "/v1/blobs/";
inline constexpr absl::string_view kBlobCacheControl =
    "public, max-age=31536000, immutable";

// A Range header (RFC 9110 14.2) against a representation of `size` bytes.
struct RangeRequest {
  enum Kind {
    kWhole,          // no Range, another unit, or several ranges: send it all
    kPart,           // one satisfiable range: 206 with [first, first + length)
    kUnsatisfiable,  // malformed, or starts past the end: 416
  };
  Kind kind = kWhole;
  uint64_t first = 0;
  uint64_t length = 0;
};
// "bytes=F-L", "bytes=F-", "bytes=-N" (one range; OWS around it). Several
// ranges are served whole (a server MAY ignore Range; no multipart answers);
// a unit other than bytes is ignored (RFC 9110: MUST). A header longer than
// 256 bytes is malformed.
RangeRequest ParseRange(absl::string_view header, uint64_t size);

// The digest named by `path` when it is exactly kBlobPathPrefix followed by 64
// lowercase hex digits; nullopt otherwise (percent-escapes, dots, a trailing
// slash or uppercase included).
std::optional<std::string> BlobDigestOfPath(absl::string_view path);
// Whether the path is under kBlobPathPrefix at all (405 vs 404 for other
// methods).
bool IsBlobPath(absl::string_view path);

// The request as civetweb parsed it (headers absent: empty).
struct BlobRequest {
  absl::string_view method;
  absl::string_view path;  // without the query string, not URL-decoded
  absl::string_view range;
  absl::string_view if_range;
  absl::string_view if_none_match;
  absl::string_view authorization;
};

// The answer: status line, header lines and which bytes of the blob follow.
struct BlobAnswer {
  int status = 404;
  std::string head;  // "HTTP/1.1 ..." through the blank line
  uint64_t first = 0;
  uint64_t length = 0;  // body bytes from the blob (0 for HEAD and errors)
  std::string body;     // a short text body for errors
};

// The answer for a request whose path is under kBlobPathPrefix. `size`: the
// blob's size, nullopt when the store does not hold it. `authorized`: whether
// the request may read blobs (false: 401).
BlobAnswer AnswerBlob(const BlobRequest& request, std::optional<uint64_t> size,
                      bool authorized = true);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_METRICS_BLOB_ROUTE_H_
