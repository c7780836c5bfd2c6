// The SDK's fleet RPCs (Watch, ReportStatus, rollouts), used by GrpcClient in
// client.cc, and the status conversion both files use. Internal to client/sdk:
// protobuf and gRPC types appear here, never in client.h.
#ifndef WEIGHTCAST_CLIENT_SDK_FLEET_CALLS_H_
#define WEIGHTCAST_CLIENT_SDK_FLEET_CALLS_H_

#include <grpcpp/grpcpp.h>

#include <functional>

#include "client/sdk/client.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast::fleet_calls {

// A gRPC status as an absl one (the codes are the same numbers).
inline absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// Sets the deadline and credentials metadata of a call.
using Prepare = std::function<void(grpc::ClientContext*)>;

absl::Status Watch(
    v1::Distribution::Stub& stub, const std::string& token,
    const WatchOptions& options,
    const std::function<void(const AssignmentInfo&)>& on_assignment,
    const std::function<void()>& on_keepalive);
absl::Status ReportStatus(v1::Distribution::Stub& stub, const Prepare& prepare,
                          const DeviceStatusReport& report);
absl::StatusOr<RolloutInfo> StartRollout(
    v1::Admin::Stub& stub, const Prepare& prepare, const std::string& model,
    const std::string& version, double percent,
    const std::vector<std::string>& groups);
absl::StatusOr<RolloutInfo> UpdateRollout(v1::Admin::Stub& stub,
                                          const Prepare& prepare,
                                          const std::string& model,
                                          const RolloutUpdate& update);
absl::StatusOr<RolloutInfo> RollbackRollout(v1::Admin::Stub& stub,
                                            const Prepare& prepare,
                                            const std::string& model);
absl::StatusOr<RolloutInfo> GetRollout(v1::Admin::Stub& stub,
                                       const Prepare& prepare,
                                       const std::string& model);

}  // namespace weightcast::fleet_calls

#endif  // WEIGHTCAST_CLIENT_SDK_FLEET_CALLS_H_
