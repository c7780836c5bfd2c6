// The gRPC services: thin handlers that convert requests, call the ModelStore
// (or, for rollouts, Watch and device reports, the Fleet: fleet_services.cc),
// and convert the status once. Synchronous gRPC API but for Watch and
// ReportStatus (callback API): a server-streaming Write blocks until the
// transport takes the message, so a pull has one write in flight. Thread-safe;
// the store must outlive them.
#ifndef WEIGHTCAST_SERVER_RPC_SERVICES_H_
#define WEIGHTCAST_SERVER_RPC_SERVICES_H_

#include <atomic>

#include "server/core/model_store.h"
#include "server/metrics/metrics.h"
#include "server/push/fleet.h"
#include "server/rpc/auth.h"
#include "server/rpc/call_deadlines.h"
#include "server/rpc/registry_monitor.h"
#include "server/rpc/stream_limiter.h"
#include "server/rpc/watch_reactor.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {

// Pull payload messages carry at most this many bytes: well under gRPC's 4 MiB
// default.
inline constexpr size_t kPullChunkBytes = 256 << 10;
// Uploads larger than this are refused (RESOURCE_EXHAUSTED).
inline constexpr uint64_t kDefaultMaxUploadBytes = uint64_t{8} << 30;

// What one client may ask of the server. Null pointers turn a check off.
struct RpcLimits {
  uint64_t max_upload_bytes = kDefaultMaxUploadBytes;
  const TokenAuth* auth = nullptr;   // bearer tokens by role
  StreamLimiter* streams = nullptr;  // concurrent Pull/Watch streams per client
  CallDeadlines* deadlines = nullptr;  // server-side time limits below
  absl::Duration upload_time =
      absl::Hours(1);  // a RegisterModel call, upload and checks
  absl::Duration pull_time = absl::Hours(1);  // a Pull stream
  // A registered version's ladder starts encoding in the background at once
  // (below pulls that wait: EncoderPool), so its sizes are known early.
  bool encode_on_register = true;
  // A shared registry's reachability (null with SQLite): while it is lost,
  // every RPC but health is refused with UNAVAILABLE.
  const RegistryMonitor* registry = nullptr;
};

// The services' admission: the caller's token (auth.h), then the registry.
inline grpc::Status Allow(const RpcLimits& limits,
                          const grpc::ServerContextBase* context, Role needed) {
  if (grpc::Status denied = Allow(limits.auth, context, needed); !denied.ok())
    return denied;
  return limits.registry == nullptr ? grpc::Status::OK
                                    : limits.registry->Admit();
}

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(ModelStore* store, Fleet* fleet, ServerMetrics* metrics,
               const RpcLimits& limits)
      : store_(store),
        fleet_(fleet),
        metrics_(metrics),
        limits_(limits),
        auth_(limits.auth) {}

  grpc::Status RegisterModel(
      grpc::ServerContext* context,
      grpc::ServerReader<v1::RegisterModelRequest>* reader,
      v1::RegisterModelResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context,
                          const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status DescribeModel(grpc::ServerContext* context,
                             const v1::DescribeModelRequest* request,
                             v1::ModelVersion* response) override;
  grpc::Status DeleteVersion(grpc::ServerContext* context,
                             const v1::DeleteVersionRequest* request,
                             v1::DeleteVersionResponse* response) override;
  grpc::Status WarmTiers(grpc::ServerContext* context,
                         const v1::WarmTiersRequest* request,
                         v1::WarmTiersResponse* response) override;
  grpc::Status SetDefaultLadder(
      grpc::ServerContext* context, const v1::SetDefaultLadderRequest* request,
      v1::SetDefaultLadderResponse* response) override;
  grpc::Status StartRollout(grpc::ServerContext* context,
                            const v1::StartRolloutRequest* request,
                            v1::Rollout* response) override;
  grpc::Status UpdateRollout(grpc::ServerContext* context,
                             const v1::UpdateRolloutRequest* request,
                             v1::Rollout* response) override;
  grpc::Status RollbackRollout(grpc::ServerContext* context,
                               const v1::RollbackRolloutRequest* request,
                               v1::Rollout* response) override;
  grpc::Status GetRollout(grpc::ServerContext* context,
                          const v1::GetRolloutRequest* request,
                          v1::Rollout* response) override;

 private:
  grpc::Status Register(grpc::ServerContext* context,
                        grpc::ServerReader<v1::RegisterModelRequest>* reader,
                        v1::RegisterModelResponse* response,
                        const CallDeadlines::Guard* deadline);

  ModelStore* const store_;
  Fleet* const fleet_;
  ServerMetrics* const metrics_;
  const RpcLimits limits_;
  const TokenAuth* const auth_;
};

// Watch and ReportStatus are callback methods (any number of open Watch
// streams on gRPC's few threads: watch_reactor.h; a report waits for its batch
// without a thread); GetManifest and Pull are synchronous.
class DistributionService final
    : public v1::Distribution::WithCallbackMethod_Watch<
          v1::Distribution::WithCallbackMethod_ReportStatus<
              v1::Distribution::Service>> {
 public:
  // `blob_base_url` (weightcastd --blob-base-url; empty: none) goes into every
  // manifest: where clients may GET /v1/blobs/<sha256> instead of streaming.
  DistributionService(ModelStore* store, Fleet* fleet, ServerMetrics* metrics,
                      absl::Duration keepalive, const RpcLimits& limits,
                      std::string blob_base_url = "")
      : store_(store),
        fleet_(fleet),
        metrics_(metrics),
        keepalive_(keepalive),
        limits_(limits),
        auth_(limits.auth),
        limiter_(limits.streams),
        blob_base_url_(std::move(blob_base_url)) {}

  grpc::Status GetManifest(grpc::ServerContext* context,
                           const v1::GetManifestRequest* request,
                           v1::Manifest* response) override;
  grpc::Status Pull(grpc::ServerContext* context,
                    const v1::PullRequest* request,
                    grpc::ServerWriter<v1::PullResponse>* writer) override;
  // Sends the device's assignments as they change, a keepalive when nothing
  // happened for the keepalive interval; ends when the client goes or the fleet
  // shuts down.
  grpc::ServerWriteReactor<v1::WatchEvent>* Watch(
      grpc::CallbackServerContext* context,
      const v1::WatchRequest* request) override;
  // Answers once the report is stored (in a batch with others).
  grpc::ServerUnaryReactor* ReportStatus(
      grpc::CallbackServerContext* context, const v1::DeviceStatus* request,
      v1::ReportStatusResponse* response) override;

  // After this, new pulls get UNAVAILABLE (running streams continue until the
  // grace period).
  void Drain() { draining_.store(true); }

 private:
  grpc::Status Stream(grpc::ServerContext* context,
                      const v1::PullRequest* request,
                      grpc::ServerWriter<v1::PullResponse>* writer,
                      const CallDeadlines::Guard* deadline);

  ModelStore* const store_;
  Fleet* const fleet_;
  ServerMetrics* const metrics_;
  WatchKeepalive keepalive_;  // its thread keeps every Watch stream alive
  const RpcLimits limits_;
  const TokenAuth* const auth_;
  StreamLimiter* const limiter_;  // null: no per-client cap
  const std::string blob_base_url_;
  std::atomic<bool> draining_{
      false};  // set once by Drain(); read by every pull
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_SERVICES_H_
