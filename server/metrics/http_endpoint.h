// The civetweb wrapper: serves GET /metrics (Prometheus text format) on an HTTP address. The
// only file that includes civetweb.h. civetweb runs its own threads; the exposition callback
// must be thread-safe and outlive the endpoint.
#ifndef WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
#define WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct mg_context;
struct mg_connection;

namespace weightcast {

class MetricsEndpoint {
 public:
  // `address` is HOST:PORT (port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address,
                                                                std::function<std::string()> exposition);
  ~MetricsEndpoint();  // stops civetweb and joins its threads

  int port() const { return port_; }

 private:
  MetricsEndpoint(std::function<std::string()> exposition) : exposition_(std::move(exposition)) {}
  static int Handle(mg_connection* connection, void* self);

  const std::function<std::string()> exposition_;
  mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_METRICS_HTTP_ENDPOINT_H_
