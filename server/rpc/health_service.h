// grpc.health.v1.Health for weightcastd: Check and Watch report the server as a
// whole (service
// "" or one of its own services). Served by weightcastd rather than by gRPC's
// default service so that a health Watch takes a stream slot of its client like
// Pull and Watch do
// (--max-streams-per-client). Thread-safe; the limiter must outlive the
// service.
#ifndef WEIGHTCAST_SERVER_RPC_HEALTH_SERVICE_H_
#define WEIGHTCAST_SERVER_RPC_HEALTH_SERVICE_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/rpc/stream_limiter.h"

namespace weightcast {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  explicit HealthService(StreamLimiter* limiter) : limiter_(limiter) {}

  // SERVING or NOT_SERVING from now on; every Watch is told.
  void SetServing(bool serving);
  // Ends every Watch stream (after it was told the last status) and refuses new
  // ones.
  void Shutdown();

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>*
                         writer) override;

 private:
  StreamLimiter* const limiter_;  // null: no per-client cap

  absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int64_t changes_ ABSL_GUARDED_BY(mu_) =
      0;  // counts SetServing and Shutdown calls
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_HEALTH_SERVICE_H_
