// The fleet's RPC handlers: rollouts (Admin), Watch and ReportStatus
// (Distribution).
#include <chrono>

#include "server/rpc/conversions.h"
#include "server/rpc/services.h"

namespace weightcast {
namespace {

grpc::Status Answer(const absl::StatusOr<RolloutView>& view,
                    v1::Rollout* response) {
  if (!view.ok()) return ToGrpcStatus(view.status());
  ToProto(*view, response);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status AdminService::StartRollout(grpc::ServerContext* context,
                                        const v1::StartRolloutRequest* request,
                                        v1::Rollout* response) {
  if (grpc::Status denied = Allow(auth_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->StartRollout(
                    request->model(), request->version(), request->percent(),
                    {request->groups().begin(), request->groups().end()}),
                response);
}

grpc::Status AdminService::UpdateRollout(
    grpc::ServerContext* context, const v1::UpdateRolloutRequest* request,
    v1::Rollout* response) {
  if (grpc::Status denied = Allow(auth_, context, Role::kAdmin); !denied.ok())
    return denied;
  RolloutChange change;
  change.percent = request->percent();
  if (request->replace_groups())
    change.groups.emplace(request->groups().begin(), request->groups().end());
  if (request->pause() != v1::UpdateRolloutRequest::PAUSE_UNCHANGED) {
    change.paused = request->pause() == v1::UpdateRolloutRequest::PAUSE;
  }
  return Answer(fleet_->UpdateRollout(request->model(), change), response);
}

grpc::Status AdminService::RollbackRollout(
    grpc::ServerContext* context, const v1::RollbackRolloutRequest* request,
    v1::Rollout* response) {
  if (grpc::Status denied = Allow(auth_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->Rollback(request->model()), response);
}

grpc::Status AdminService::GetRollout(grpc::ServerContext* context,
                                      const v1::GetRolloutRequest* request,
                                      v1::Rollout* response) {
  if (grpc::Status denied = Allow(auth_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->GetRollout(request->model()), response);
}

grpc::Status DistributionService::Watch(
    grpc::ServerContext* context, const v1::WatchRequest* request,
    grpc::ServerWriter<v1::WatchEvent>* writer) {
  if (grpc::Status denied = Allow(auth_, context, Role::kDevice); !denied.ok())
    return denied;
  if (grpc::Status denied = AllowDevice(auth_, context, request->device_id());
      !denied.ok())
    return denied;
  if (draining_.load())
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down");
  grpc::Status refused;
  const std::unique_ptr<StreamLimiter::Slot> slot =
      limiter_ ? limiter_->Acquire(*context, &refused) : nullptr;
  if (limiter_ && !slot) return refused;
  WatchSpec spec{request->device_id(),
                 {request->groups().begin(), request->groups().end()},
                 {request->models().begin(), request->models().end()},
                 request->tier_policy().name(),
                 {}};
  for (const v1::InstalledModel& m : request->installed())
    spec.installed[m.model()] = m.version();
  auto subscription = fleet_->Subscribe(std::move(spec));
  if (!subscription.ok()) return ToGrpcStatus(subscription.status());
  v1::WatchEvent event;
  bool open = true;
  while (open && !context->IsCancelled() && !(*subscription)->closed()) {
    std::optional<AssignmentEvent> next = (*subscription)->Next(keepalive_);
    event.Clear();
    if (next) {
      v1::Assignment* a = event.mutable_assignment();
      a->set_model(next->model);
      a->set_version(next->version);
      a->set_tier(next->tier);
      a->set_reason(ToProto(next->reason));
      metrics_->RecordWatchEvent("assignment");
    } else {
      if ((*subscription)->closed()) break;
      event.set_keepalive_unix_ms(
          std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count());
      metrics_->RecordWatchEvent("keepalive");
    }
    open = writer->Write(event);
  }
  fleet_->Unsubscribe(*subscription);
  if ((*subscription)->closed())
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down");
  return grpc::Status::OK;
}

grpc::Status DistributionService::ReportStatus(grpc::ServerContext* context,
                                               const v1::DeviceStatus* request,
                                               v1::ReportStatusResponse*) {
  if (grpc::Status denied = Allow(auth_, context, Role::kDevice); !denied.ok())
    return denied;
  if (grpc::Status denied = AllowDevice(auth_, context, request->device_id());
      !denied.ok())
    return denied;
  const std::string state =
      request->state() == v1::DeviceStatus::STATE_UNSPECIFIED
          ? ""
          : v1::DeviceStatus::State_Name(request->state());
  DeviceRecord record{request->device_id(),
                      request->model(),
                      request->version(),
                      request->tier(),
                      state,
                      request->reason(),
                      request->bytes(),
                      request->seconds(),
                      0};
  return ToGrpcStatus(fleet_->Report(std::move(record)));
}

}  // namespace weightcast
