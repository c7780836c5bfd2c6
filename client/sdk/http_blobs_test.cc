#include "client/sdk/http_blobs.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// A scripted HTTP server on a loopback port: each connection's request
// (headers only) goes to `answer`, whose bytes are sent before the connection
// is closed. Serves at most kMaxConnections, each wait bounded; stopped and
// joined on destruction.
class ScriptedServer {
 public:
  static constexpr int kMaxConnections = 50;
  using Answer = std::function<std::string(const std::string& request)>;

  explicit ScriptedServer(Answer answer) : answer_(std::move(answer)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 16);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_); }
  std::vector<std::string> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  void Serve() {
    for (int served = 0; served < kMaxConnections && !stop_;) {
      pollfd listening{fd_, POLLIN, 0};
      if (poll(&listening, 1, 50) <= 0) continue;
      const int client = accept(fd_, nullptr, nullptr);
      if (client < 0) continue;
      ++served;
      std::string request;
      char buffer[4096];
      for (int reads = 0;
           reads < 100 && request.find("\r\n\r\n") == std::string::npos;
           ++reads) {
        pollfd readable{client, POLLIN, 0};
        if (poll(&readable, 1, 1000) <= 0) break;
        const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        request.append(buffer, n);
      }
      {
        absl::MutexLock lock(&mu_);
        requests_.push_back(request);
      }
      const std::string response = answer_(request);
      send(client, response.data(), response.size(), MSG_NOSIGNAL);
      close(client);
    }
  }

  const Answer answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<std::string> requests_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

const std::string kBlob = [] {
  std::string blob(100000, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 31);
  return blob;
}();

std::string RawDigest(const std::string& bytes) {
  const Sha256Digest digest = Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  return std::string(digest.begin(), digest.end());
}

std::string Ok(const std::string& body) {
  return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", body.size(),
                      "\r\nConnection: close\r\n\r\n", body);
}

// The first byte asked for by a "Range: bytes=N-" header; 0 without one.
size_t RangeStart(const std::string& request) {
  const size_t at = request.find("Range: bytes=");
  return at == std::string::npos ? 0 : std::stoul(request.substr(at + 13));
}

HttpBlobsOptions Options(const std::string& url) {
  HttpBlobsOptions options;
  options.base_url = url;
  options.stall_timeout = absl::Seconds(2);
  return options;
}

TEST(HttpBlobs, FetchesTheBlobNamedByItsDigest) {
  ScriptedServer server([](const std::string&) { return Ok(kBlob); });
  HttpBlobs http(Options(server.url() + "/"));
  std::string bytes;
  ASSERT_TRUE(http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes).ok());
  EXPECT_TRUE(bytes == kBlob);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_THAT(
      server.requests()[0],
      HasSubstr(absl::StrCat(
          "GET /v1/blobs/",
          DigestToHex(Sha256(absl::MakeConstSpan(
              reinterpret_cast<const uint8_t*>(kBlob.data()), kBlob.size()))),
          " HTTP/1.1\r\n")));
}

// The bytes are handed on as they arrive, across the resume: each call a
// longer prefix of the blob, the last the whole.
TEST(HttpBlobs, AShortBodyIsResumedWithRange) {
  // The first answer stops half way (the connection closes early); the
  // resume asks for the rest and gets 206.
  ScriptedServer server([](const std::string& request) {
    const size_t first = RangeStart(request);
    if (first == 0) {
      return absl::StrCat("HTTP/1.1 200 OK\r\nContent-Length: ", kBlob.size(),
                          "\r\n\r\n", kBlob.substr(0, 40000));
    }
    return absl::StrCat("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ",
                        first, "-", kBlob.size() - 1, "/", kBlob.size(),
                        "\r\nContent-Length: ", kBlob.size() - first,
                        "\r\n\r\n", kBlob.substr(first));
  });
  HttpBlobs http(Options(server.url()));
  std::string bytes;
  std::vector<size_t> arrived;
  bool prefixes = true;
  const absl::Status status = http.Fetch(
      RawDigest(kBlob), kBlob.size(), &bytes, [&](absl::string_view prefix) {
        prefixes = prefixes &&
                   (arrived.empty() || prefix.size() > arrived.back()) &&
                   absl::string_view(kBlob).substr(0, prefix.size()) == prefix;
        arrived.push_back(prefix.size());
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(bytes == kBlob);
  EXPECT_TRUE(prefixes);
  ASSERT_GE(arrived.size(), 2u);
  EXPECT_THAT(arrived, ::testing::Contains(40000u));
  EXPECT_EQ(arrived.back(), kBlob.size());
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_THAT(server.requests()[1], HasSubstr("Range: bytes=40000-\r\n"));
}

TEST(HttpBlobs, ServerIgnoringRangeRestartsFromTheFirstByte) {
  ScriptedServer server([](const std::string&) { return Ok(kBlob); });
  HttpBlobs http(Options(server.url()));
  std::string bytes = kBlob.substr(0, 10);  // held from an earlier transfer
  ASSERT_TRUE(http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes).ok());
  EXPECT_TRUE(bytes == kBlob);
}

TEST(HttpBlobs, WrongBytesAreDataLossAndLeaveNothing) {
  std::string wrong = kBlob;
  wrong[500] ^= 1;
  ScriptedServer server([&](const std::string&) { return Ok(wrong); });
  HttpBlobs http(Options(server.url()));
  std::string bytes;
  const absl::Status status =
      http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr("do not match their SHA-256"));
  EXPECT_TRUE(bytes.empty());
}

TEST(HttpBlobs, MoreBytesThanExpectedAreRefusedWithoutGrowing) {
  // Claims and sends 10x the blob: the transfer is cut at the expected size.
  const std::string huge = kBlob + std::string(9 * kBlob.size(), 'x');
  ScriptedServer server([&](const std::string&) { return Ok(huge); });
  HttpBlobs http(Options(server.url()));
  std::string bytes;
  const absl::Status status =
      http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes);
  EXPECT_FALSE(status.ok());
  EXPECT_LE(bytes.size(), kBlob.size());
  EXPECT_LE(server.requests().size(), 3u);
}

TEST(HttpBlobs, ErrorStatusesAndBadRangesAreUnavailable) {
  const std::vector<std::string> answers = {
      "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n",
      "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n",
      // 206 for bytes the client did not ask for.
      absl::StrCat("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes "
                   "5-9/100000\r\nContent-Length: 5\r\n\r\nabcde"),
      "HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\r\nabcde",
      "HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\n"
      "Content-Length: 0\r\n\r\n",
      "garbage\r\n\r\n",
      "",
  };
  for (const std::string& answer : answers) {
    ScriptedServer server([&](const std::string&) { return answer; });
    HttpBlobs http(Options(server.url()));
    std::string bytes;
    const absl::Status status =
        http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << answer << "\n"
                                                             << status;
    EXPECT_TRUE(bytes.empty()) << answer;
    EXPECT_LE(server.requests().size(), 3u) << answer;
  }
}

TEST(HttpBlobs, NoServerIsUnavailableAfterItsAttempts) {
  int port = 0;
  {
    ScriptedServer closed([](const std::string&) { return ""; });
    port = std::stoi(closed.url().substr(17));
  }
  HttpBlobs http(Options(absl::StrCat("http://127.0.0.1:", port)));
  std::string bytes;
  const absl::Status status =
      http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(http.transfers(), 3);
}

TEST(HttpBlobs, OnlyHttpAndHttpsUrls) {
  HttpBlobs http(Options("file:///etc"));
  std::string bytes;
  EXPECT_EQ(http.Fetch(RawDigest(kBlob), kBlob.size(), &bytes).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(bytes.empty());
}

}  // namespace
}  // namespace weightcast
