// The civetweb wrapper: serves the Prometheus text exposition at exactly
// GET/HEAD /metrics on an HTTP address; every other path is 404, every other
// method on /metrics 405. The only file that includes civetweb.h. civetweb runs
// its own threads (kWorkerThreads workers, one connection each): the exposition
// callback must be thread-safe and outlive the endpoint. An idle or slow client
// holds a worker for less than 2 x kRequestTimeout (http_endpoint.cc says why).
#ifndef WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
#define WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct mg_context;
struct mg_connection;

namespace weightcast {

class MetricsEndpoint {
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
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& address, std::function<std::string()> exposition);
  ~MetricsEndpoint();  // stops civetweb and joins its threads

  int port() const { return port_; }

 private:
  MetricsEndpoint(std::function<std::string()> exposition)
      : exposition_(std::move(exposition)) {}
  // civetweb's begin_request callback: answers every request itself.
  static int Answer(mg_connection* connection);

  // Constant after Start.
  const std::function<std::string()> exposition_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
