#include "client/sdk/fleet_calls.h"

#include <thread>

#include "absl/synchronization/notification.h"

namespace weightcast::fleet_calls {
namespace {

RolloutInfo FromProto(const v1::Rollout& r) {
  RolloutInfo info{r.model(),
                   r.version(),
                   r.baseline_version(),
                   r.percent(),
                   {r.groups().begin(), r.groups().end()},
                   v1::Rollout::State_Name(r.state()),
                   {},
                   r.subscribers()};
  for (const auto& c : r.counts())
    info.counts.push_back({c.version(), c.state(), c.devices()});
  return info;
}

absl::StatusOr<RolloutInfo> Answer(const grpc::Status& status,
                                   const v1::Rollout& response) {
  if (!status.ok()) return FromGrpc(status);
  return FromProto(response);
}

}  // namespace

absl::Status Watch(
    v1::Distribution::Stub& stub, const std::string& token,
    const WatchOptions& options,
    const std::function<void(const AssignmentInfo&)>& on_assignment,
    const std::function<void()>& on_keepalive) {
  v1::WatchRequest request;
  request.set_device_id(options.device_id);
  for (const std::string& g : options.groups) request.add_groups(g);
  for (const std::string& m : options.models) request.add_models(m);
  request.mutable_tier_policy()->set_name(options.tier_name);
  for (const auto& [model, version] : options.installed) {
    v1::InstalledModel* m = request.add_installed();
    m->set_model(model);
    m->set_version(version);
  }
  grpc::ClientContext context;
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  // A watcher thread turns `should_end` into a cancelled call.
  absl::Notification done;
  std::atomic<bool> ended{false};
  std::thread canceller;
  if (options.should_end) {
    canceller = std::thread([&] {
      while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
        if (options.should_end()) {
          ended.store(true);
          context.TryCancel();
          return;
        }
      }
    });
  }
  auto reader = stub.Watch(&context, request);
  v1::WatchEvent event;
  while (reader->Read(&event)) {
    if (event.has_assignment()) {
      const v1::Assignment& a = event.assignment();
      on_assignment({a.model(), a.version(), a.tier(),
                     v1::Assignment::Reason_Name(a.reason())});
    } else if (on_keepalive) {
      on_keepalive();
    }
  }
  const grpc::Status status = reader->Finish();
  done.Notify();
  if (canceller.joinable()) canceller.join();
  if (ended.load()) return absl::CancelledError("watch ended by the caller");
  if (status.ok()) return absl::UnavailableError("the server ended the watch");
  return FromGrpc(status);
}

absl::Status ReportStatus(v1::Distribution::Stub& stub, const Prepare& prepare,
                          const DeviceStatusReport& report) {
  v1::DeviceStatus request;
  request.set_device_id(report.device_id);
  request.set_model(report.model);
  request.set_version(report.version);
  request.set_tier(report.tier);
  v1::DeviceStatus::State state = v1::DeviceStatus::STATE_UNSPECIFIED;
  v1::DeviceStatus::State_Parse(report.state, &state);
  request.set_state(state);
  request.set_reason(report.reason);
  request.set_bytes(report.bytes);
  request.set_seconds(report.seconds);
  grpc::ClientContext context;
  prepare(&context);
  v1::ReportStatusResponse response;
  return FromGrpc(stub.ReportStatus(&context, request, &response));
}

absl::StatusOr<RolloutInfo> StartRollout(
    v1::Admin::Stub& stub, const Prepare& prepare, const std::string& model,
    const std::string& version, double percent,
    const std::vector<std::string>& groups) {
  v1::StartRolloutRequest request;
  request.set_model(model);
  request.set_version(version);
  request.set_percent(percent);
  for (const std::string& g : groups) request.add_groups(g);
  grpc::ClientContext context;
  prepare(&context);
  v1::Rollout response;
  return Answer(stub.StartRollout(&context, request, &response), response);
}

absl::StatusOr<RolloutInfo> UpdateRollout(v1::Admin::Stub& stub,
                                          const Prepare& prepare,
                                          const std::string& model,
                                          const RolloutUpdate& update) {
  v1::UpdateRolloutRequest request;
  request.set_model(model);
  request.set_percent(update.percent);
  if (update.groups) {
    request.set_replace_groups(true);
    for (const std::string& g : *update.groups) request.add_groups(g);
  }
  if (update.paused)
    request.set_pause(*update.paused ? v1::UpdateRolloutRequest::PAUSE
                                     : v1::UpdateRolloutRequest::RESUME);
  grpc::ClientContext context;
  prepare(&context);
  v1::Rollout response;
  return Answer(stub.UpdateRollout(&context, request, &response), response);
}

absl::StatusOr<RolloutInfo> RollbackRollout(v1::Admin::Stub& stub,
                                            const Prepare& prepare,
                                            const std::string& model) {
  v1::RollbackRolloutRequest request;
  request.set_model(model);
  grpc::ClientContext context;
  prepare(&context);
  v1::Rollout response;
  return Answer(stub.RollbackRollout(&context, request, &response), response);
}

absl::StatusOr<RolloutInfo> GetRollout(v1::Admin::Stub& stub,
                                       const Prepare& prepare,
                                       const std::string& model) {
  v1::GetRolloutRequest request;
  request.set_model(model);
  grpc::ClientContext context;
  prepare(&context);
  v1::Rollout response;
  return Answer(stub.GetRollout(&context, request, &response), response);
}

}  // namespace weightcast::fleet_calls

namespace weightcast {

uint64_t RolloutInfo::Devices(const std::string& version,
                              const std::string& state) const {
  uint64_t n = 0;
  for (const Count& c : counts)
    n += c.version == version && c.state == state ? c.devices : 0;
  return n;
}

}  // namespace weightcast
