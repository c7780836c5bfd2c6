// The gRPC services: thin handlers that convert requests, call the ModelStore, and convert the
// status once. Synchronous gRPC API: a server-streaming Write blocks until the transport takes
// the message, so a pull has one write in flight. Thread-safe; the store must outlive them.
#ifndef WEIGHTCAST_SERVER_RPC_SERVICES_H_
#define WEIGHTCAST_SERVER_RPC_SERVICES_H_

#include <atomic>

#include "server/core/model_store.h"
#include "server/metrics/metrics.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {

// Pull payload messages carry at most this many bytes: well under gRPC's 4 MiB default.
inline constexpr size_t kPullChunkBytes = 256 << 10;
// Uploads larger than this are refused (RESOURCE_EXHAUSTED).
inline constexpr uint64_t kDefaultMaxUploadBytes = uint64_t{8} << 30;

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(ModelStore* store, ServerMetrics* metrics, uint64_t max_upload_bytes)
      : store_(store), metrics_(metrics), max_upload_bytes_(max_upload_bytes) {}

  grpc::Status RegisterModel(grpc::ServerContext* context, grpc::ServerReader<v1::RegisterModelRequest>* reader,
                             v1::RegisterModelResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status DescribeModel(grpc::ServerContext* context, const v1::DescribeModelRequest* request,
                             v1::ModelVersion* response) override;
  grpc::Status DeleteVersion(grpc::ServerContext* context, const v1::DeleteVersionRequest* request,
                             v1::DeleteVersionResponse* response) override;
  grpc::Status WarmTiers(grpc::ServerContext* context, const v1::WarmTiersRequest* request,
                         v1::WarmTiersResponse* response) override;
  grpc::Status SetDefaultLadder(grpc::ServerContext* context, const v1::SetDefaultLadderRequest* request,
                                v1::SetDefaultLadderResponse* response) override;

 private:
  grpc::Status Register(grpc::ServerContext* context, grpc::ServerReader<v1::RegisterModelRequest>* reader,
                        v1::RegisterModelResponse* response);

  ModelStore* const store_;
  ServerMetrics* const metrics_;
  const uint64_t max_upload_bytes_;
};

class DistributionService final : public v1::Distribution::Service {
 public:
  DistributionService(ModelStore* store, ServerMetrics* metrics) : store_(store), metrics_(metrics) {}

  grpc::Status GetManifest(grpc::ServerContext* context, const v1::GetManifestRequest* request,
                           v1::Manifest* response) override;
  grpc::Status Pull(grpc::ServerContext* context, const v1::PullRequest* request,
                    grpc::ServerWriter<v1::PullResponse>* writer) override;

  // After this, new pulls get UNAVAILABLE (running streams continue until the grace period).
  void Drain() { draining_.store(true); }

 private:
  grpc::Status Stream(grpc::ServerContext* context, const v1::PullRequest* request,
                      grpc::ServerWriter<v1::PullResponse>* writer);

  ModelStore* const store_;
  ServerMetrics* const metrics_;
  std::atomic<bool> draining_{false};  // set once by Drain(); read by every pull
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_SERVICES_H_
