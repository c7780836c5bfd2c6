#include "server/metrics/blob_route.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace weightcast {
namespace {

constexpr size_t kMaxRangeHeaderBytes = 256;
constexpr size_t kMaxConditionalHeaderBytes = 4096;

// Decimal digits only (no sign, no spaces); false on none or on more than
// 2^64 - 1 (the caller treats such a number as "past any end").
bool ParseDecimal(absl::string_view text, uint64_t* value, bool* overflow) {
  *value = 0;
  *overflow = false;
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (*value > (UINT64_MAX - digit) / 10) {
      *overflow = true;
    } else {
      *value = *value * 10 + digit;
    }
  }
  return true;
}

std::string ETagOf(absl::string_view digest) {
  return absl::StrCat("\"", digest, "\"");
}

// If-None-Match (RFC 9110 13.1.2): "*" or a list of entity tags, compared
// weakly (a W/ prefix is ignored).
bool NoneMatchFails(absl::string_view header, absl::string_view etag) {
  if (header.size() > kMaxConditionalHeaderBytes) return false;
  for (absl::string_view tag : absl::StrSplit(header, ',')) {
    tag = absl::StripAsciiWhitespace(tag);
    if (tag == "*") return true;
    absl::ConsumePrefix(&tag, "W/");
    if (tag == etag) return true;
  }
  return false;
}

std::string Head(absl::string_view status, absl::string_view headers,
                 absl::string_view content_type, uint64_t content_length) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", content_length, "\r\n", headers,
                      "Connection: close\r\n\r\n");
}

BlobAnswer TextAnswer(int status, absl::string_view status_line,
                      absl::string_view headers, absl::string_view text,
                      bool head_only) {
  BlobAnswer answer;
  answer.status = status;
  answer.head =
      Head(status_line, headers, "text/plain; charset=utf-8", text.size());
  if (!head_only) answer.body = std::string(text);
  return answer;
}

}  // namespace

RangeRequest ParseRange(absl::string_view header, uint64_t size) {
  RangeRequest whole;
  if (header.empty()) return whole;
  RangeRequest unsatisfiable;
  unsatisfiable.kind = RangeRequest::kUnsatisfiable;
  if (header.size() > kMaxRangeHeaderBytes) return unsatisfiable;
  const size_t equals = header.find('=');
  if (equals == absl::string_view::npos) return unsatisfiable;
  const absl::string_view unit =
      absl::StripAsciiWhitespace(header.substr(0, equals));
  if (unit.empty()) return unsatisfiable;
  if (!absl::EqualsIgnoreCase(unit, "bytes")) return whole;  // RFC 9110: MUST
  const absl::string_view set = header.substr(equals + 1);
  if (absl::StrContains(set, ',')) {
    // Several ranges: each must still be well formed, then all of it is sent.
    for (absl::string_view spec : absl::StrSplit(set, ',')) {
      if (ParseRange(absl::StrCat("bytes=", spec), UINT64_MAX).kind ==
          RangeRequest::kUnsatisfiable)
        return unsatisfiable;
    }
    return whole;
  }
  const absl::string_view spec = absl::StripAsciiWhitespace(set);
  const size_t dash = spec.find('-');
  if (dash == absl::string_view::npos) return unsatisfiable;
  const absl::string_view first_text = spec.substr(0, dash);
  const absl::string_view last_text = spec.substr(dash + 1);
  uint64_t first = 0, last = 0;
  bool first_overflow = false, last_overflow = false;
  if (first_text.empty()) {  // suffix range: the last N bytes
    uint64_t suffix = 0;
    if (!ParseDecimal(last_text, &suffix, &last_overflow) || suffix == 0 ||
        size == 0)
      return unsatisfiable;
    if (last_overflow || suffix > size) suffix = size;
    return RangeRequest{RangeRequest::kPart, size - suffix, suffix};
  }
  if (!ParseDecimal(first_text, &first, &first_overflow)) return unsatisfiable;
  if (!last_text.empty()) {
    if (!ParseDecimal(last_text, &last, &last_overflow)) return unsatisfiable;
    if (!last_overflow && (first_overflow || last < first))
      return unsatisfiable;  // last-pos < first-pos: invalid
  }
  if (first_overflow || first >= size) return unsatisfiable;
  if (last_text.empty() || last_overflow || last >= size) last = size - 1;
  return RangeRequest{RangeRequest::kPart, first, last - first + 1};
}

bool IsBlobPath(absl::string_view path) {
  return absl::StartsWith(path, kBlobPathPrefix);
}

std::optional<std::string> BlobDigestOfPath(absl::string_view path) {
  if (!absl::ConsumePrefix(&path, kBlobPathPrefix) || path.size() != 64)
    return std::nullopt;
  for (char c : path) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return std::nullopt;
  }
  return std::string(path);
}

BlobAnswer AnswerBlob(const BlobRequest& request, std::optional<uint64_t> size,
                      bool authorized) {
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    return TextAnswer(405, "405 Method Not Allowed", "Allow: GET, HEAD\r\n",
                      "Method Not Allowed\n", false);
  }
  const std::optional<std::string> digest = BlobDigestOfPath(request.path);
  if (!digest) return TextAnswer(404, "404 Not Found", "", "Not Found\n", head);
  if (!authorized) {
    return TextAnswer(401, "401 Unauthorized",
                      "WWW-Authenticate: Bearer\r\nCache-Control: no-store\r\n",
                      "Unauthorized\n", head);
  }
  // A blob not here (yet): another replica may be writing it; do not let a
  // cache remember its absence.
  if (!size) {
    return TextAnswer(404, "404 Not Found", "Cache-Control: no-store\r\n",
                      "Not Found\n", head);
  }
  const std::string etag = ETagOf(*digest);
  const std::string cache_headers = absl::StrCat(
      "ETag: ", etag, "\r\nCache-Control: ", kBlobCacheControl, "\r\n");
  BlobAnswer answer;
  if (!request.if_none_match.empty() &&
      NoneMatchFails(request.if_none_match, etag)) {
    answer.status = 304;
    answer.head = absl::StrCat("HTTP/1.1 304 Not Modified\r\n", cache_headers,
                               "Connection: close\r\n\r\n");
    return answer;
  }
  const std::string blob_headers =
      absl::StrCat(cache_headers, "Accept-Ranges: bytes\r\n");
  RangeRequest range;
  // Range applies to GET only; If-Range other than our ETag asks for it all.
  if (!head && (request.if_range.empty() ||
                absl::StripAsciiWhitespace(request.if_range) == etag)) {
    range = ParseRange(request.range, *size);
  }
  switch (range.kind) {
    case RangeRequest::kUnsatisfiable:
      return TextAnswer(
          416, "416 Range Not Satisfiable",
          absl::StrCat(blob_headers, "Content-Range: bytes */", *size, "\r\n"),
          "Range Not Satisfiable\n", false);
    case RangeRequest::kPart:
      answer.status = 206;
      answer.head = Head(
          "206 Partial Content",
          absl::StrCat(blob_headers, "Content-Range: bytes ", range.first, "-",
                       range.first + range.length - 1, "/", *size, "\r\n"),
          "application/octet-stream", range.length);
      answer.first = range.first;
      answer.length = range.length;
      return answer;
    case RangeRequest::kWhole:
      break;
  }
  answer.status = 200;
  answer.head = Head("200 OK", blob_headers, "application/octet-stream", *size);
  answer.length = head ? 0 : *size;
  return answer;
}

}  // namespace weightcast
