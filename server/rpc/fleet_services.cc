// The fleet's RPC handlers: rollouts (Admin), Watch and ReportStatus
// (Distribution).
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
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->StartRollout(
                    request->model(), request->version(), request->percent(),
                    {request->groups().begin(), request->groups().end()}),
                response);
}

grpc::Status AdminService::UpdateRollout(
    grpc::ServerContext* context, const v1::UpdateRolloutRequest* request,
    v1::Rollout* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
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
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->Rollback(request->model()), response);
}

grpc::Status AdminService::GetRollout(grpc::ServerContext* context,
                                      const v1::GetRolloutRequest* request,
                                      v1::Rollout* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  return Answer(fleet_->GetRollout(request->model()), response);
}

grpc::ServerWriteReactor<v1::WatchEvent>* DistributionService::Watch(
    grpc::CallbackServerContext* context, const v1::WatchRequest* request) {
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok())
    return WatchReactor::Refuse(denied);
  if (grpc::Status denied = AllowDevice(auth_, context, request->device_id());
      !denied.ok())
    return WatchReactor::Refuse(denied);
  if (draining_.load())
    return WatchReactor::Refuse(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                             "the server is shutting down"));
  grpc::Status refused;
  std::unique_ptr<StreamLimiter::Slot> slot =
      limiter_ ? limiter_->Acquire(*context, &refused) : nullptr;
  if (limiter_ && !slot) return WatchReactor::Refuse(refused);
  WatchSpec spec{request->device_id(),
                 {request->groups().begin(), request->groups().end()},
                 {request->models().begin(), request->models().end()},
                 request->tier_policy().name(),
                 {}};
  for (const v1::InstalledModel& m : request->installed())
    spec.installed[m.model()] = m.version();
  return WatchReactor::Start(fleet_, metrics_, &keepalive_, std::move(slot),
                             std::move(spec));
}

grpc::ServerUnaryReactor* DistributionService::ReportStatus(
    grpc::CallbackServerContext* context, const v1::DeviceStatus* request,
    v1::ReportStatusResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  if (grpc::Status denied = AllowDevice(auth_, context, request->device_id());
      !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
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
  fleet_->Report(std::move(record), [reactor](absl::Status stored) {
    reactor->Finish(ToGrpcStatus(stored));
  });
  return reactor;
}

}  // namespace weightcast
