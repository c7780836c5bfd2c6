#include "client/sdk/grpc_client.h"

#include <grpcpp/generic/generic_stub.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "client/sdk/conversions.h"
#include "client/sdk/fleet_calls.h"
#include "client/sdk/pull.h"
#include "client/sdk/tier_wait.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

constexpr size_t kUploadChunkBytes = 1 << 20;

using fleet_calls::FromGrpc;

class GrpcClient final : public Client {
 public:
  GrpcClient(const ConnectOptions& options,
             std::shared_ptr<grpc::Channel> channel,
             std::shared_ptr<grpc::Channel> paced_channel)
      : options_(options),
        channel_(std::move(channel)),
        admin_(v1::Admin::NewStub(channel_)),
        distribution_(v1::Distribution::NewStub(channel_)),
        paced_distribution_(v1::Distribution::NewStub(paced_channel)) {}

  absl::Status Watch(
      const WatchOptions& options,
      const std::function<void(const AssignmentInfo&)>& on_assignment,
      const std::function<void()>& on_keepalive) override {
    return fleet_calls::Watch(*distribution_, options_.token, options,
                              on_assignment, on_keepalive);
  }
  absl::Status ReportStatus(const DeviceStatusReport& report) override {
    return fleet_calls::ReportStatus(*distribution_, Prepare(), report);
  }
  absl::StatusOr<RolloutInfo> StartRollout(
      const std::string& model, const std::string& version, double percent,
      const std::vector<std::string>& groups) override {
    return fleet_calls::StartRollout(*admin_, Prepare(), model, version,
                                     percent, groups);
  }
  absl::StatusOr<RolloutInfo> UpdateRollout(
      const std::string& model, const RolloutUpdate& update) override {
    return fleet_calls::UpdateRollout(*admin_, Prepare(), model, update);
  }
  absl::StatusOr<RolloutInfo> RollbackRollout(
      const std::string& model) override {
    return fleet_calls::RollbackRollout(*admin_, Prepare(), model);
  }
  absl::StatusOr<RolloutInfo> GetRollout(const std::string& model) override {
    return fleet_calls::GetRollout(*admin_, Prepare(), model);
  }

  absl::StatusOr<bool> Health(absl::Duration timeout) override {
    // No generated stub for grpc.health.v1 ships with Debian's gRPC: call it
    // generically. The request is empty (all services); the response's field 1
    // (varint) is the status, 1 = SERVING.
    grpc::GenericStub stub(channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(timeout));
    grpc::CompletionQueue queue;
    grpc::Slice empty;
    grpc::ByteBuffer request(&empty, 1), response;
    auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                                      request, &queue);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    queue.Next(&tag, &ok);
    queue.Shutdown();
    while (queue.Next(&tag, &ok)) {
    }
    RETURN_IF_ERROR(FromGrpc(status));
    std::vector<grpc::Slice> slices;
    response.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& slice : slices)
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    return bytes == std::string("\x08\x01", 2);
  }

  absl::StatusOr<ModelInfo> Register(const RegisterOptions& options) override {
    // The files are sent a chunk at a time from disk: client memory is one
    // chunk whatever the checkpoint's size.
    ASSIGN_OR_RETURN(const uint64_t checkpoint_bytes,
                     FileSize(options.checkpoint_path));
    if (options.eval_module_path.empty() != options.eval_data_path.empty()) {
      return absl::InvalidArgumentError(
          "an evaluation bundle needs both the module and the data file");
    }
    uint64_t module_bytes = 0, data_bytes = 0;
    if (!options.eval_module_path.empty()) {
      ASSIGN_OR_RETURN(module_bytes, FileSize(options.eval_module_path));
      ASSIGN_OR_RETURN(data_bytes, FileSize(options.eval_data_path));
    }
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::RegisterModelResponse response;
    auto writer = admin_->RegisterModel(&context, &response);
    v1::RegisterModelRequest request;
    v1::RegisterHeader* header = request.mutable_header();
    header->set_model(options.model);
    header->set_version(options.version);
    header->set_tier_ladder(options.tier_ladder);
    header->set_description(options.description);
    header->set_layer_policy_json(options.layer_policy_json);
    header->set_base_version(options.base_version);
    header->set_total_bytes(checkpoint_bytes);
    header->set_eval_module_bytes(module_bytes);
    header->set_eval_data_bytes(data_bytes);
    bool open = writer->Write(request);
    // A file that changed size since FileSize sends other bytes than the
    // header announced: the server refuses the upload (INVALID_ARGUMENT).
    auto send =
        [&](const std::string& path,
            std::string* (v1::RegisterModelRequest::*field)()) -> absl::Status {
      if (path.empty() || !open) return absl::OkStatus();
      return ReadFileInChunks(
          path, kUploadChunkBytes, [&](absl::Span<const uint8_t> chunk) {
            request.Clear();
            (request.*field)()->assign(
                reinterpret_cast<const char*>(chunk.data()), chunk.size());
            open = writer->Write(request);
            return open;
          });
    };
    absl::Status read =
        send(options.checkpoint_path, &v1::RegisterModelRequest::mutable_chunk);
    if (read.ok())
      read = send(options.eval_module_path,
                  &v1::RegisterModelRequest::mutable_eval_module_chunk);
    if (read.ok())
      read = send(options.eval_data_path,
                  &v1::RegisterModelRequest::mutable_eval_data_chunk);
    if (!read.ok()) {
      context.TryCancel();  // nothing half-sent is stored
      writer->Finish();     // CANCELLED: the reason is `read`
      return read;
    }
    writer->WritesDone();
    RETURN_IF_ERROR(FromGrpc(writer->Finish()));
    return FromProto(response.version());
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
  List() override {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ListModelsResponse response;
    RETURN_IF_ERROR(FromGrpc(admin_->ListModels(&context, {}, &response)));
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const auto& m : response.models())
      out.emplace_back(m.name(), std::vector<std::string>(m.versions().begin(),
                                                          m.versions().end()));
    return out;
  }

  absl::StatusOr<ModelInfo> Describe(const std::string& model,
                                     const std::string& version) override {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::DescribeModelRequest request;
    request.set_model(model);
    request.set_version(version);
    v1::ModelVersion response;
    RETURN_IF_ERROR(
        FromGrpc(admin_->DescribeModel(&context, request, &response)));
    return FromProto(response);
  }

  absl::Status Warm(const std::string& model, const std::string& version,
                    const std::vector<std::string>& tiers) override {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::WarmTiersRequest request;
    request.set_model(model);
    request.set_version(version);
    for (const std::string& t : tiers) request.add_tiers(t);
    v1::WarmTiersResponse response;
    return FromGrpc(admin_->WarmTiers(&context, request, &response));
  }

  absl::Status Delete(const std::string& model,
                      const std::string& version) override {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::DeleteVersionRequest request;
    request.set_model(model);
    request.set_version(version);
    v1::DeleteVersionResponse response;
    return FromGrpc(admin_->DeleteVersion(&context, request, &response));
  }

  absl::StatusOr<PullResult> Pull(const PullOptions& options) override;

 private:
  fleet_calls::Prepare Prepare() const {
    return [this](grpc::ClientContext* context) { SetDeadline(context); };
  }
  void SetDeadline(grpc::ClientContext* context) const {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(absl::ToInt64Milliseconds(
                              options_.call_timeout)));
    if (!options_.token.empty())
      context->AddMetadata("authorization", "Bearer " + options_.token);
  }
  const ConnectOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Admin::Stub> admin_;
  const std::unique_ptr<v1::Distribution::Stub> distribution_;
  // For rate-limited pulls: a fixed 64 KiB receive window (no BDP growth), so
  // that pacing the reads slows the sender instead of filling buffers at full
  // speed.
  const std::unique_ptr<v1::Distribution::Stub> paced_distribution_;
};

absl::StatusOr<PullResult> GrpcClient::Pull(const PullOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // A selection by bytes, fidelity, accuracy or link speed waits for the
  // tiers' sizes (tier_wait.h); RunPull then makes the same (pure) choice from
  // the description it waited for.
  ASSIGN_OR_RETURN(const auto described,
                   DescribeAndSelectTier(*this, options,
                                         absl::Now() + options_.call_timeout));
  const ModelInfo& info = described.first;
  return RunPull({distribution_.get(), paced_distribution_.get(), Prepare(),
                  options_.token.empty() ? "" : "Bearer " + options_.token},
                 info, options, start);
}

}  // namespace

std::unique_ptr<Client> NewGrpcClient(
    const ConnectOptions& options, std::shared_ptr<grpc::Channel> channel,
    std::shared_ptr<grpc::Channel> paced_channel) {
  return std::make_unique<GrpcClient>(options, std::move(channel),
                                      std::move(paced_channel));
}

}  // namespace weightcast
