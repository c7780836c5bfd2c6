#include "server/rpc/health_service.h"

#include "absl/time/time.h"

namespace weightcast {
namespace {

using grpc::health::v1::HealthCheckResponse;

// The services this server answers for ("" is the server as a whole).
bool Known(const std::string& service) {
  return service.empty() || service == "weightcast.v1.Admin" ||
         service == "weightcast.v1.Distribution";
}

}  // namespace

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  serving_ = serving;
  ++changes_;
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  serving_ = false;
  ++changes_;
}

grpc::Status HealthService::Check(
    grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest* request,
    HealthCheckResponse* response) {
  if (!Known(request->service()))
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  absl::MutexLock lock(&mu_);
  response->set_status(serving_ ? HealthCheckResponse::SERVING
                                : HealthCheckResponse::NOT_SERVING);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(
    grpc::ServerContext* context,
    const grpc::health::v1::HealthCheckRequest* request,
    grpc::ServerWriter<HealthCheckResponse>* writer) {
  grpc::Status refused;
  const std::unique_ptr<StreamLimiter::Slot> slot =
      limiter_ ? limiter_->Acquire(*context, &refused) : nullptr;
  if (limiter_ && !slot) return refused;
  const bool known = Known(request->service());
  int64_t seen = -1;
  while (!context->IsCancelled()) {
    HealthCheckResponse response;
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      // Wakes for a change, and once a second to notice a client that went
      // away.
      const auto changed = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return changes_ != seen;
      };
      if (!mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Seconds(1)))
        continue;
      seen = changes_;
      last = shut_down_;
      response.set_status(!known     ? HealthCheckResponse::SERVICE_UNKNOWN
                          : serving_ ? HealthCheckResponse::SERVING
                                     : HealthCheckResponse::NOT_SERVING);
    }
    if (!writer->Write(response)) break;
    if (last)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the server is shutting down");
  }
  return grpc::Status::OK;
}

}  // namespace weightcast
