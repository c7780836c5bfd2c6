#include "client/sdk/http_blobs.h"

#include <curl/curl.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/base/sha256.h"

namespace weightcast {
namespace {

// One transfer's state, shared with libcurl's callbacks.
struct Transfer {
  CURL* curl = nullptr;
  std::string* bytes = nullptr;
  uint64_t expected_size = 0;
  uint64_t offset = 0;        // what we asked for: bytes from here on
  std::string content_range;  // the answer's Content-Range value
  bool started = false;       // the first body byte arrived and was accepted
  std::string refused;        // why the body was refused (empty: it was not)
  const std::atomic<bool>* cancel = nullptr;
  const HttpBlobs::Arriving* arriving = nullptr;  // called after each append
};

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  absl::string_view line(data, size * count);
  if (absl::StartsWithIgnoreCase(line, "content-range:")) {
    line.remove_prefix(sizeof("content-range:") - 1);
    transfer->content_range = std::string(absl::StripAsciiWhitespace(line));
  }
  return size * count;
}

// Decides once, at the first body byte, whether the answer is the bytes we
// asked for: 206 starting at our offset, or 200 (the whole blob; a server may
// ignore Range), then appends with a bound.
size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (!transfer->started) {
    long status = 0;
    curl_easy_getinfo(transfer->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) {
      transfer->bytes->clear();  // the whole blob, from its first byte
    } else if (status == 206) {
      // "bytes FIRST-LAST/SIZE": FIRST must be our offset.
      absl::string_view range = transfer->content_range;
      uint64_t first = 0;
      const bool at_offset =
          absl::ConsumePrefix(&range, "bytes ") &&
          range.find('-') != absl::string_view::npos &&
          absl::SimpleAtoi(range.substr(0, range.find('-')), &first) &&
          first == transfer->offset;
      if (!at_offset) {
        transfer->refused = absl::StrCat("206 with Content-Range '",
                                         transfer->content_range.substr(0, 80),
                                         "' for bytes ", transfer->offset, "-");
        return 0;
      }
    } else {
      transfer->refused = absl::StrCat("HTTP status ", status);
      return 0;
    }
    transfer->started = true;
  }
  if (transfer->bytes->size() + n > transfer->expected_size) {
    transfer->refused = absl::StrCat("more than the blob's ",
                                     transfer->expected_size, " bytes");
    return 0;
  }
  transfer->bytes->append(data, n);
  if (*transfer->arriving) (*transfer->arriving)(*transfer->bytes);
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* transfer = static_cast<Transfer*>(user);
  return transfer->cancel != nullptr && transfer->cancel->load() ? 1 : 0;
}

}  // namespace

HttpBlobs::HttpBlobs(HttpBlobsOptions options) : options_(std::move(options)) {
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
}

HttpBlobs::~HttpBlobs() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

absl::Status HttpBlobs::Fetch(absl::string_view sha256, uint64_t expected_size,
                              std::string* bytes, const Arriving& arriving) {
  CURL* curl = static_cast<CURL*>(curl_);
  if (curl == nullptr) return absl::UnavailableError("libcurl did not start");
  if (sha256.size() != 32)
    return absl::InvalidArgumentError("a blob digest has 32 bytes");
  if (bytes->size() > expected_size) bytes->clear();
  std::string base = options_.base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  Sha256Digest name;
  std::copy(sha256.begin(), sha256.end(), name.begin());
  const std::string url = absl::StrCat(base, "/v1/blobs/", DigestToHex(name));
  std::string last_error = "no transfer";
  for (int attempt = 0; attempt < options_.attempts; ++attempt) {
    if (options_.cancel != nullptr && options_.cancel->load())
      return absl::CancelledError("pull cancelled");
    if (bytes->size() == expected_size) break;
    Transfer transfer;
    transfer.curl = curl;
    transfer.bytes = bytes;
    transfer.expected_size = expected_size;
    transfer.offset = bytes->size();
    transfer.cancel = options_.cancel;
    transfer.arriving = &arriving;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(
        curl, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(std::max<int64_t>(
                         1, absl::ToInt64Seconds(options_.stall_timeout))));
    if (options_.max_bytes_per_second > 0) {
      curl_easy_setopt(curl, CURLOPT_MAX_RECV_SPEED_LARGE,
                       static_cast<curl_off_t>(options_.max_bytes_per_second));
    }
    curl_slist* headers = nullptr;
    if (!options_.authorization.empty()) {
      headers = curl_slist_append(
          headers, ("Authorization: " + options_.authorization).c_str());
      curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    }
    const std::string range = absl::StrCat(transfer.offset, "-");
    if (transfer.offset > 0)
      curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
    ++transfers_;
    const CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (code == CURLE_OK && !transfer.started && bytes->size() < expected_size)
      transfer.refused = absl::StrCat("HTTP status ", status, " and no body");
    if (code == CURLE_ABORTED_BY_CALLBACK)
      return absl::CancelledError("pull cancelled");
    last_error =
        !transfer.refused.empty() ? transfer.refused : curl_easy_strerror(code);
    if (!transfer.refused.empty() && !transfer.started) {
      // A status or range we cannot use: another attempt would get the same.
      if (status != 0 && status < 500) break;
    }
  }
  if (bytes->size() != expected_size) {
    return absl::UnavailableError(absl::StrCat(url, ": ", last_error, " (",
                                               bytes->size(), " of ",
                                               expected_size, " bytes)"));
  }
  const Sha256Digest digest = Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  if (absl::string_view(reinterpret_cast<const char*>(digest.data()),
                        digest.size()) != sha256) {
    bytes->clear();
    return absl::DataLossError(
        absl::StrCat(url, ": the bytes do not match their SHA-256"));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
