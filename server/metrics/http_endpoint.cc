#include "server/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/metrics/blob_route.h"
#include "server/storage/blob_store.h"

namespace weightcast {
namespace {

// Why idle and slow clients cannot keep a scrape waiting long (civetweb 1.15,
// Debian 12):
// - civetweb accepts every connection into one first-come-first-served queue
// (connection_queue
//   20, then the kernel's listen backlog 200); each of kWorkerThreads workers
//   serves one connection at a time, so a scrape waits only while every worker
//   is held.
// - request_timeout_ms bounds the request line and headers, counted from when a
// worker takes the
//   connection: a client that sends nothing is dropped after kRequestTimeout,
//   one that sends a header byte a second before 2 x kRequestTimeout (after
//   each byte civetweb polls a full timeout again before it checks the total).
// - keep-alive stays off (civetweb's default): one request per connection, no
// idle keep-alive.
// - Answer never reads a request body, and tells civetweb to close without
// reading it either
//   (kAnsweredCloseNow below): a declared body trickled slowly cannot hold a
//   worker.
// - The answer (4 KB with one tier encoded) fits the socket's send buffer (16
// KiB at first), so a
//   client that does not read does not hold the worker; no linger_timeout_ms,
//   so close() does not wait for the client. Not bounded: an exposition far
//   past the buffers, read slowly (civetweb bounds each write by
//   request_timeout_ms, not the whole answer).
// So fewer than kWorkerThreads slow clients do not delay a scrape at all, and C
// >= kWorkerThreads of them delay it by at most ceil((C - kWorkerThreads + 1) /
// kWorkerThreads) x 2 x kRequestTimeout (48 silent connections: about
// kRequestTimeout). civetweb serves a connection per thread, so only a limit on
// who may connect (a firewall, a NetworkPolicy) does better than that. 32
// blocked threads cost little (each a 16 KiB request buffer and a mostly
// untouched stack) and are far more than the scrapers that exist (Prometheus
// replicas, a dashboard, a curl).
constexpr char kWorkerThreadsOption[] = "32";
constexpr char kRequestTimeoutOption[] = "2000";
static_assert(HttpEndpoint::kWorkerThreads == 32);
static_assert(HttpEndpoint::kRequestTimeout == absl::Milliseconds(2000));

constexpr absl::string_view kPath = "/metrics";

// A blob's body is read and written in pieces of this size: memory per
// connection is bounded whatever the blob's size.
constexpr uint64_t kBlobPieceBytes = 256 << 10;

// A request header's value, or "" when absent.
absl::string_view HeaderOf(mg_connection* connection, const char* name) {
  const char* value = mg_get_header(connection, name);
  return value != nullptr ? value : "";
}

// begin_request's answer for "handled; close the connection without reading the
// rest of the request". civetweb 1.15 reads a request's body to its end after a
// begin_request that returns a status (> 0), each read bounded by
// request_timeout_ms but not the whole; after a negative return it does nothing
// more, and with keep-alive off it closes the connection (handle_request, step
// 3). http_endpoint_test.cc's DeclaredRequestBodiesAreNotWaitedFor checks this
// stays so.
constexpr int kAnsweredCloseNow = -1;

// civetweb does not take port 0: ask the kernel for a free loopback port
// (HOST:0 -> HOST:PORT). Another process could take it before civetweb binds;
// Start then fails clearly.
std::string WithFreePort(const std::string& address) {
  if (address.size() < 2 || address.substr(address.size() - 2) != ":0")
    return address;
  const std::string host = address.substr(0, address.size() - 2);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return absl::StrCat(host, ":", port);
}

// A whole HTTP/1.1 response. `headers` are extra header lines, each ending in
// \r\n. HEAD gets the same headers as GET and no body.
std::string Response(absl::string_view status, absl::string_view headers,
                     absl::string_view content_type, absl::string_view body,
                     bool with_body) {
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\n", headers,
                      "Connection: close\r\n\r\n", with_body ? body : "");
}

// Writes `answer` with its bytes from `reader`; returns the body bytes
// written.
uint64_t WriteBlobAnswer(mg_connection* connection, const BlobAnswer& answer,
                         std::optional<BlobReader>& reader) {
  if (mg_write(connection, answer.head.data(), answer.head.size()) <= 0)
    return 0;
  if (!answer.body.empty()) {
    return mg_write(connection, answer.body.data(), answer.body.size()) > 0
               ? answer.body.size()
               : 0;
  }
  std::string piece;
  uint64_t done = 0;
  while (reader && done < answer.length) {
    const uint64_t want = std::min(kBlobPieceBytes, answer.length - done);
    if (!reader->ReadInto(answer.first + done, want, &piece).ok() ||
        piece.empty())
      break;  // the client sees a short body and retries elsewhere
    if (mg_write(connection, piece.data(), piece.size()) <= 0) break;
    done += piece.size();
  }
  return done;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& address, HttpRoutes routes) {
  static std::once_flag library_init;
  std::call_once(library_init, [] { mg_init_library(0); });
  std::unique_ptr<HttpEndpoint> endpoint(new HttpEndpoint(std::move(routes)));
  const std::string listen = WithFreePort(address);
  // clang-format off
  const char* options[] = {
      "listening_ports", listen.c_str(),
      "num_threads", kWorkerThreadsOption,
      "request_timeout_ms", kRequestTimeoutOption,
      "enable_keep_alive", "no",
      "decode_url", "no",  // the path is compared as sent: "/%6Detrics" is not "/metrics"
      nullptr};
  // clang-format on
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.begin_request = &HttpEndpoint::Answer;
  mg_init_data init;
  std::memset(&init, 0, sizeof(init));
  init.callbacks = &callbacks;
  init.user_data = endpoint.get();
  init.configuration_options = options;
  char error_text[256] = "";
  mg_error_data error;
  std::memset(&error, 0, sizeof(error));
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  endpoint->context_ = mg_start2(&init, &error);
  if (endpoint->context_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("http: cannot listen on ", listen, ": ", error_text));
  }
  mg_server_port ports[4];
  const int count = mg_get_server_ports(endpoint->context_, 4, ports);
  if (count > 0) endpoint->port_ = ports[0].port;
  return endpoint;
}

HttpEndpoint::~HttpEndpoint() {
  if (context_ != nullptr) mg_stop(context_);
}

// Every request civetweb parsed comes here first (before its own handlers, CORS
// answers and file serving, none of which this endpoint uses). The query string
// is already split off: scrapers may send one, and it is ignored.
int HttpEndpoint::Answer(mg_connection* connection) {
  const mg_request_info* request = mg_get_request_info(connection);
  const auto* self = static_cast<const HttpEndpoint*>(
      mg_get_user_data(mg_get_context(connection)));
  const absl::string_view path =
      request->local_uri_raw != nullptr ? request->local_uri_raw : "";
  const absl::string_view method =
      request->request_method != nullptr ? request->request_method : "";
  const bool head = method == "HEAD";
  if (self->routes_.blobs != nullptr && IsBlobPath(path)) {
    self->ServeBlob(connection);
    return kAnsweredCloseNow;
  }
  std::string response;
  if (path != kPath || !self->routes_.metrics) {
    response = Response("404 Not Found", "", "text/plain; charset=utf-8",
                        "Not Found\n", !head);
  } else if (method != "GET" && !head) {
    response =
        Response("405 Method Not Allowed", "Allow: GET, HEAD\r\n",
                 "text/plain; charset=utf-8", "Method Not Allowed\n", true);
  } else {
    response =
        Response("200 OK", "", "text/plain; version=0.0.4; charset=utf-8",
                 self->routes_.metrics(), !head);
  }
  mg_write(connection, response.data(),
           response.size());  // a client gone away is not an error here
  return kAnsweredCloseNow;
}

// GET/HEAD /v1/blobs/<sha256>: blob_route.h decides the answer; this writes
// it, the body read from the blob file in kBlobPieceBytes pieces. Work per
// request is bounded by the blob's size; a client that stops reading fails a
// write after request_timeout_ms, which ends the answer.
void HttpEndpoint::ServeBlob(mg_connection* connection) const {
  const mg_request_info* request = mg_get_request_info(connection);
  BlobRequest blob_request;
  blob_request.method =
      request->request_method != nullptr ? request->request_method : "";
  blob_request.path =
      request->local_uri_raw != nullptr ? request->local_uri_raw : "";
  blob_request.range = HeaderOf(connection, "Range");
  blob_request.if_range = HeaderOf(connection, "If-Range");
  blob_request.if_none_match = HeaderOf(connection, "If-None-Match");
  const bool authorized =
      !routes_.blob_reader ||
      routes_.blob_reader(std::string(HeaderOf(connection, "Authorization")));
  std::optional<BlobReader> reader;
  std::optional<uint64_t> size;
  if (const std::optional<std::string> digest =
          BlobDigestOfPath(blob_request.path);
      digest && authorized) {
    absl::StatusOr<BlobReader> opened = routes_.blobs->OpenForRead(*digest);
    if (opened.ok()) {
      size = opened->size();
      reader.emplace(*std::move(opened));
    }
  }
  const BlobAnswer answer = AnswerBlob(blob_request, size, authorized);
  const uint64_t written = WriteBlobAnswer(connection, answer, reader);
  if (routes_.on_blob_answer) routes_.on_blob_answer(answer.status, written);
}

}  // namespace weightcast
