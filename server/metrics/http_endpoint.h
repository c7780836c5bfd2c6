// The civetweb wrapper: serves, on one HTTP address, the Prometheus text
// exposition at exactly GET/HEAD /metrics and/or the blob store's blobs at
// GET/HEAD /v1/blobs/<sha256> (blob_route.h: Range, ETag, immutable caching);
// every other path is 404, every other method on a served path 405. The only
// file that includes civetweb.h. civetweb runs its own threads (kWorkerThreads
// workers, one connection each): the routes' callbacks must be thread-safe and
// they and the blob store must outlive the endpoint. An idle or slow client
// holds a worker for less than 2 x kRequestTimeout before its answer starts
// (http_endpoint.cc says why); a blob answer's writes are each bounded by it.
#ifndef WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
#define WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct mg_context;
struct mg_connection;

namespace weightcast {

class BlobStore;

// What one endpoint serves. Unset routes answer 404.
struct HttpRoutes {
  std::function<std::string()> metrics;  // the /metrics exposition
  const BlobStore* blobs = nullptr;      // /v1/blobs/<sha256>
  // With blobs: whether a request's Authorization header value may read blobs
  // (unset: everyone may).
  std::function<bool(const std::string& authorization)> blob_reader;
  // With blobs: told of every blob answer, its status code and the body bytes
  // written (fewer than the answer's when the client went away).
  std::function<void(int status, uint64_t body_bytes)> on_blob_answer;
};

class HttpEndpoint {
 public:
  // Connections served at once; more wait in civetweb's queue, first come first
  // served.
  static constexpr int kWorkerThreads = 32;
  // How long a client may take to send its request line and headers (a trickle
  // of bytes can stretch it to twice that: civetweb checks the total after each
  // read).
  static constexpr absl::Duration kRequestTimeout = absl::Seconds(2);

  // `address` is HOST:PORT (port 0 picks a free one). UNAVAILABLE if it cannot
  // listen there.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& address, HttpRoutes routes);
  ~HttpEndpoint();  // stops civetweb and joins its threads

  int port() const { return port_; }

 private:
  explicit HttpEndpoint(HttpRoutes routes) : routes_(std::move(routes)) {}
  // civetweb's begin_request callback: answers every request itself.
  static int Answer(mg_connection* connection);
  void ServeBlob(mg_connection* connection) const;

  // Constant after Start.
  const HttpRoutes routes_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
