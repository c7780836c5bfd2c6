#include "server/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/blob_store.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kExposition[] =
    "# HELP weightcast_cache_hits_total Tier lookups served from the cache.\n"
    "# TYPE weightcast_cache_hits_total counter\n"
    "weightcast_cache_hits_total 7\n";

// No exchange with the endpoint waits longer than this: a test fails instead of
// hanging.
constexpr absl::Duration kReceiveTimeout = absl::Seconds(5);

absl::StatusOr<std::unique_ptr<HttpEndpoint>> StartEndpoint() {
  return HttpEndpoint::Start(
      "127.0.0.1:0", {.metrics = [] { return std::string(kExposition); }});
}

// A TCP connection to 127.0.0.1:port whose reads give up after kReceiveTimeout;
// -1 if refused.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const timeval timeout = absl::ToTimeval(kReceiveTimeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

absl::Duration Since(std::chrono::steady_clock::time_point start) {
  return absl::FromChrono(std::chrono::steady_clock::now() - start);
}

struct HttpAnswer {
  int status = 0;       // 0: no status line arrived
  std::string headers;  // status line and header lines, each ending in \r\n
  std::string body;
  bool closed = false;  // the server closed the connection (FIN or reset)
                        // within kReceiveTimeout
  absl::Duration
      elapsed;  // from connect until closed, or until the reads gave up
};

// Reads what the server sends on `fd` until it closes the connection or
// kReceiveTimeout passes.
HttpAnswer ReadAnswer(int fd, std::chrono::steady_clock::time_point start) {
  HttpAnswer answer;
  std::string bytes;
  char buffer[4096];
  for (int reads = 0; reads < 10000 && Since(start) < kReceiveTimeout;
       ++reads) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n > 0) {
      bytes.append(buffer, n);
      continue;
    }
    answer.closed = n == 0 || errno == ECONNRESET;
    break;
  }
  answer.elapsed = Since(start);
  const size_t end = bytes.find("\r\n\r\n");
  if (end == std::string::npos || bytes.rfind("HTTP/1.", 0) != 0 ||
      bytes.size() < 12)
    return answer;
  answer.status = std::atoi(bytes.substr(9, 3).c_str());
  answer.headers = bytes.substr(0, end + 2);
  answer.body = bytes.substr(end + 4);
  return answer;
}

// Sends `request` (whole, as given) on a new connection and reads the answer.
HttpAnswer Exchange(int port, const std::string& request) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = Connect(port);
  if (fd < 0) return HttpAnswer{};
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  HttpAnswer answer = ReadAnswer(fd, start);
  close(fd);
  return answer;
}

HttpAnswer Scrape(int port) {
  return Exchange(
      port,
      "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n");
}

int Connected(const std::vector<int>& fds) {
  return static_cast<int>(
      std::count_if(fds.begin(), fds.end(), [](int fd) { return fd >= 0; }));
}

// Connections that send nothing. Closed on destruction.
class SilentClients {
 public:
  SilentClients(int port, int count) {
    for (int i = 0; i < count; ++i) fds_.push_back(Connect(port));
  }
  ~SilentClients() {
    for (int fd : fds_) close(fd);
  }
  int connected() const { return Connected(fds_); }
  const std::vector<int>& fds() const { return fds_; }

 private:
  std::vector<int> fds_;
};

// Slowloris: connections that send a request's headers one byte a second and
// never finish them, for at most kMaxSeconds. The sending thread is stopped and
// joined on destruction.
class SlowClients {
 public:
  static constexpr int kMaxSeconds = 10;

  SlowClients(int port, int count) {
    for (int i = 0; i < count; ++i) fds_.push_back(Connect(port));
    sender_ = std::thread([this] {
      const std::string headers =
          "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
          "aaaaaaaaaaaaaaaaaaaa";
      for (int second = 0;
           second < kMaxSeconds && second < static_cast<int>(headers.size());
           ++second) {
        for (int fd : fds_) send(fd, &headers[second], 1, MSG_NOSIGNAL);
        if (stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) return;
      }
    });
  }
  ~SlowClients() {
    stop_.Notify();
    sender_.join();
    for (int fd : fds_) close(fd);
  }
  int connected() const { return Connected(fds_); }
  const std::vector<int>& fds() const { return fds_; }

 private:
  std::vector<int> fds_;
  absl::Notification stop_;
  std::thread sender_;
};

// How many of `fds` the server closed within kReceiveTimeout of `start`
// (whatever it sent first).
int ClosedByServer(const std::vector<int>& fds,
                   std::chrono::steady_clock::time_point start) {
  int closed = 0;
  for (int fd : fds) closed += ReadAnswer(fd, start).closed ? 1 : 0;
  return closed;
}

TEST(HttpEndpoint, SixteenSilentAndEightSlowClientsDoNotDelayAScrape) {
  auto endpoint = StartEndpoint();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  const auto opened = std::chrono::steady_clock::now();
  SilentClients silent(port, 16);
  SlowClients slow(port, 8);
  ASSERT_EQ(silent.connected(), 16);
  ASSERT_EQ(slow.connected(), 8);

  const HttpAnswer scrape = Scrape(port);
  EXPECT_EQ(scrape.status, 200) << scrape.headers;
  EXPECT_EQ(scrape.body, kExposition);
  // Fewer slow clients than workers: the scrape waits for no timeout at all.
  EXPECT_LT(scrape.elapsed, HttpEndpoint::kRequestTimeout);

  // Each slow client holds its worker for less than two request timeouts.
  EXPECT_EQ(ClosedByServer(silent.fds(), opened), 16);
  EXPECT_EQ(ClosedByServer(slow.fds(), opened), 8);
  EXPECT_LT(Since(opened),
            2 * HttpEndpoint::kRequestTimeout + absl::Seconds(1));
  if (!HasFailure()) {
    RecordReliability(
        "16 silent and 8 slowloris (a header byte a second) TCP connections "
        "held to the /metrics port",
        absl::StrCat("a scrape alongside them: 200 with the exposition in ",
                     absl::ToInt64Milliseconds(scrape.elapsed), " ms"),
        absl::StrCat("the server closed all 24 within ",
                     absl::ToInt64Milliseconds(Since(opened)),
                     " ms (request timeout ",
                     absl::FormatDuration(HttpEndpoint::kRequestTimeout), ")"));
  }
}

TEST(HttpEndpoint,
     MoreSilentClientsThanWorkersDelayAScrapeByOneRequestTimeout) {
  auto endpoint = StartEndpoint();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  const int clients = HttpEndpoint::kWorkerThreads + 16;
  const auto opened = std::chrono::steady_clock::now();
  SilentClients silent(port, clients);
  ASSERT_EQ(silent.connected(), clients);

  const HttpAnswer scrape = Scrape(port);
  EXPECT_EQ(scrape.status, 200) << scrape.headers;
  EXPECT_EQ(scrape.body, kExposition);
  // Every worker holds a silent client, so the scrape waits (first come, first
  // served) until the first of them time out, and then no longer.
  EXPECT_GE(scrape.elapsed, HttpEndpoint::kRequestTimeout / 2);
  EXPECT_LT(scrape.elapsed, 2 * HttpEndpoint::kRequestTimeout);
  // The silent clients queued behind the first ones are dropped one request
  // timeout later.
  EXPECT_EQ(ClosedByServer(silent.fds(), opened), clients);
  const absl::Duration all_closed = Since(opened);
  if (!HasFailure()) {
    RecordReliability(
        absl::StrCat(clients,
                     " silent TCP connections held to the /metrics port (",
                     HttpEndpoint::kWorkerThreads, " HTTP workers)"),
        absl::StrCat("a scrape behind them: 200 with the exposition after ",
                     absl::ToInt64Milliseconds(scrape.elapsed),
                     " ms, when the first of them reach the request timeout (",
                     absl::FormatDuration(HttpEndpoint::kRequestTimeout), ")"),
        absl::StrCat("the server closed all ", clients, " within ",
                     absl::ToInt64Milliseconds(all_closed), " ms"));
  }
}

TEST(HttpEndpoint, DeclaredRequestBodiesAreNotWaitedFor) {
  auto endpoint = StartEndpoint();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  // One byte of a declared megabyte: the server answers and closes without
  // waiting for the rest.
  const std::string body_headers =
      "Host: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: "
      "1000000\r\n\r\nx";
  const HttpAnswer post =
      Exchange(port, "POST /metrics HTTP/1.1\r\n" + body_headers);
  EXPECT_EQ(post.status, 405) << post.headers;
  EXPECT_TRUE(post.closed);
  EXPECT_LT(post.elapsed, HttpEndpoint::kRequestTimeout);
  const HttpAnswer get =
      Exchange(port, "GET /metrics HTTP/1.1\r\n" + body_headers);
  EXPECT_EQ(get.status, 200) << get.headers;
  EXPECT_EQ(get.body, kExposition);
  EXPECT_TRUE(get.closed);
  EXPECT_LT(get.elapsed, HttpEndpoint::kRequestTimeout);
  if (!HasFailure()) {
    RecordReliability(
        "POST and GET /metrics declaring a 1 MB body and sending 1 byte of it",
        absl::StrCat("405 and 200, the connection closed at once (",
                     absl::ToInt64Milliseconds(post.elapsed), " and ",
                     absl::ToInt64Milliseconds(get.elapsed),
                     " ms) without reading the body"),
        "no HTTP worker is held by a trickled body");
  }
}

struct Case {
  std::string request_line;
  int status;  // 0: closed without an answer
};

TEST(HttpEndpoint, OnlyGetAndHeadOfExactlyMetricsAnswer200) {
  auto endpoint = StartEndpoint();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  const std::vector<Case> cases = {
      {"GET /metrics HTTP/1.1", 200},
      {"GET /metrics HTTP/1.0", 200},
      {"GET /metrics?x=1 HTTP/1.1",
       200},  // scrapers may add a query string; it is ignored
      {"GET /metrics? HTTP/1.1", 200},
      // The absolute form: civetweb closes it unanswered (no
      // authentication_domain matches).
      {absl::StrCat("GET http://127.0.0.1:", port, "/metrics HTTP/1.1"), 0},
      {"GET / HTTP/1.1", 404},
      {"GET /metrics/ HTTP/1.1", 404},
      {"GET /metrics/x HTTP/1.1", 404},
      {"GET /metricsX HTTP/1.1", 404},
      {"GET /metrics/../x HTTP/1.1", 404},
      {"GET /x/../metrics HTTP/1.1", 404},
      {"GET /metrics/. HTTP/1.1", 404},
      {"GET //metrics HTTP/1.1", 404},
      {"GET /%6Detrics HTTP/1.1", 404},
      {"GET /metrics%00 HTTP/1.1", 404},
      {"GET /metrics%3Fx HTTP/1.1", 404},
      {"GET /METRICS HTTP/1.1", 404},
      {"POST /x HTTP/1.1", 404},
      {"POST /metrics HTTP/1.1", 405},
      {"PUT /metrics HTTP/1.1", 405},
      {"DELETE /metrics HTTP/1.1", 405},
      {"PATCH /metrics HTTP/1.1", 405},
      {"OPTIONS /metrics HTTP/1.1", 405},
      {"PROPFIND /metrics HTTP/1.1", 405},
      {"BREW /metrics HTTP/1.1",
       400},  // not an HTTP method: civetweb refuses it before the endpoint
  };
  for (const Case& c : cases) {
    const HttpAnswer answer =
        Exchange(port, c.request_line +
                           "\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    EXPECT_EQ(answer.status, c.status) << c.request_line << "\n"
                                       << answer.headers;
    if (c.status == 200) {
      EXPECT_EQ(answer.body, kExposition) << c.request_line;
      EXPECT_THAT(answer.headers,
                  HasSubstr("\r\nContent-Type: text/plain; version=0.0.4; "
                            "charset=utf-8\r\n"));
    } else {
      EXPECT_THAT(answer.body, Not(HasSubstr("weightcast_"))) << c.request_line;
    }
    if (c.status == 405) {
      EXPECT_THAT(answer.headers, HasSubstr("\r\nAllow: GET, HEAD\r\n"))
          << c.request_line;
    }
  }

  // HEAD: GET's headers, no body.
  const HttpAnswer head =
      Exchange(port, "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(head.status, 200) << head.headers;
  EXPECT_THAT(head.headers,
              HasSubstr(absl::StrCat(
                  "\r\nContent-Length: ", sizeof(kExposition) - 1, "\r\n")));
  EXPECT_EQ(head.body, "");
  EXPECT_TRUE(head.closed);
  const HttpAnswer head_elsewhere =
      Exchange(port, "HEAD /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(head_elsewhere.status, 404) << head_elsewhere.headers;
  EXPECT_EQ(head_elsewhere.body, "");

  // A CORS preflight, which civetweb would answer 200 on its own.
  const HttpAnswer preflight =
      Exchange(port,
               "OPTIONS /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: "
               "http://example.com\r\n"
               "Access-Control-Request-Method: GET\r\n\r\n");
  EXPECT_EQ(preflight.status, 405) << preflight.headers;
  EXPECT_THAT(preflight.headers, HasSubstr("\r\nAllow: GET, HEAD\r\n"));
  if (!HasFailure()) {
    RecordReliability(
        "GET /metrics/, /metricsX, /metrics/../x, /x/../metrics, /%6Detrics, "
        "/metrics%00, //metrics and other "
        "paths; POST, PUT, DELETE, PATCH, OPTIONS (also a CORS preflight), "
        "PROPFIND on /metrics; BREW",
        "404 for every path but exactly /metrics; 405 with Allow: GET, HEAD; "
        "400 for a non-method; GET and HEAD "
        "/metrics (a query string ignored) 200, HEAD without a body",
        "no other request gets the exposition");
  }
}

TEST(HttpEndpoint, ServesBlobsWithRangesAndNothingOutsideTheStore) {
  auto store = BlobStore::Open(FreshDir("http_endpoint_blobs"));
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<uint8_t> bytes(700 << 10);  // several kBlobPieceBytes pieces
  for (size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<uint8_t>(i * 7 + i / 251);
  auto digest = (*store)->Put(bytes);
  ASSERT_TRUE(digest.ok()) << digest.status();
  const std::string content(bytes.begin(), bytes.end());
  auto endpoint = HttpEndpoint::Start("127.0.0.1:0", {.blobs = store->get()});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  auto get = [&](const std::string& target, const std::string& headers = "") {
    return Exchange(
        port, absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                           headers, "\r\n"));
  };
  const std::string path = "/v1/blobs/" + *digest;

  const HttpAnswer whole = get(path);
  EXPECT_EQ(whole.status, 200) << whole.headers;
  EXPECT_TRUE(whole.body == content) << whole.body.size();
  EXPECT_THAT(whole.headers, HasSubstr("\r\nETag: \"" + *digest + "\"\r\n"));
  EXPECT_THAT(whole.headers, HasSubstr("\r\nCache-Control: public, "
                                       "max-age=31536000, immutable\r\n"));

  const HttpAnswer part = get(path, "Range: bytes=300000-300099\r\n");
  EXPECT_EQ(part.status, 206) << part.headers;
  EXPECT_EQ(part.body, content.substr(300000, 100));
  const HttpAnswer tail = get(path, "Range: bytes=-10\r\n");
  EXPECT_EQ(tail.status, 206) << tail.headers;
  EXPECT_EQ(tail.body, content.substr(content.size() - 10));
  const HttpAnswer past =
      get(path, absl::StrCat("Range: bytes=", content.size(), "-\r\n"));
  EXPECT_EQ(past.status, 416) << past.headers;
  EXPECT_THAT(past.headers,
              HasSubstr(absl::StrCat("\r\nContent-Range: bytes */",
                                     content.size(), "\r\n")));
  const HttpAnswer cached =
      get(path, absl::StrCat("If-None-Match: \"", *digest, "\"\r\n"));
  EXPECT_EQ(cached.status, 304) << cached.headers;
  EXPECT_EQ(cached.body, "");

  const std::string absent(64, '0');
  for (const std::string& target : std::vector<std::string>{
           "/v1/blobs/" + absent, "/metrics", path + "/", path + "?x=1/../..",
           "/v1/blobs/../blobs/" + *digest, "/v1/blobs/%2e%2e/" + *digest,
           "/v1/blobs/" + digest->substr(0, 2) + "/" + *digest,
           "/v1/blobs/../../../../etc/passwd",
           "/v1/blobs/" + *digest + "%00"}) {
    const HttpAnswer answer = get(target);
    // A query string is split off by civetweb: "?x=1/../.." still names the
    // blob, and only it.
    if (target == path + "?x=1/../..") {
      EXPECT_EQ(answer.status, 200) << target;
      continue;
    }
    EXPECT_EQ(answer.status, 404) << target << "\n" << answer.headers;
    EXPECT_THAT(answer.body, Not(HasSubstr("root:"))) << target;
  }
  const HttpAnswer post = Exchange(port, "POST " + path +
                                             " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                             "Content-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status, 405) << post.headers;
  EXPECT_THAT(post.headers, HasSubstr("\r\nAllow: GET, HEAD\r\n"));
  const HttpAnswer head =
      Exchange(port, "HEAD " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  EXPECT_EQ(head.status, 200) << head.headers;
  EXPECT_EQ(head.body, "");
  EXPECT_THAT(
      head.headers,
      HasSubstr(absl::StrCat("\r\nContent-Length: ", content.size(), "\r\n")));
}

TEST(HttpEndpoint, BlobReaderCheckDecidesWhoMayGetBlobs) {
  auto store = BlobStore::Open(FreshDir("http_endpoint_blob_auth"));
  ASSERT_TRUE(store.ok()) << store.status();
  const std::vector<uint8_t> bytes = {1, 2, 3};
  auto digest = (*store)->Put(bytes);
  ASSERT_TRUE(digest.ok()) << digest.status();
  auto endpoint = HttpEndpoint::Start(
      "127.0.0.1:0",
      {.blobs = store->get(), .blob_reader = [](const std::string& header) {
         return header == "Bearer good";
       }});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const std::string request =
      "GET /v1/blobs/" + *digest + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  const HttpAnswer without = Exchange((*endpoint)->port(), request + "\r\n");
  EXPECT_EQ(without.status, 401) << without.headers;
  const HttpAnswer wrong = Exchange(
      (*endpoint)->port(), request + "Authorization: Bearer bad\r\n\r\n");
  EXPECT_EQ(wrong.status, 401) << wrong.headers;
  const HttpAnswer good = Exchange(
      (*endpoint)->port(), request + "Authorization: Bearer good\r\n\r\n");
  EXPECT_EQ(good.status, 200) << good.headers;
  EXPECT_EQ(good.body, std::string("\x01\x02\x03"));
}

}  // namespace
}  // namespace weightcast
