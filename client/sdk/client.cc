#include "client/sdk/client.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/sdk/base_store.h"
#include "client/sdk/fleet_calls.h"
#include "client/sdk/tier_wait.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/pack/delta_codec.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "common/pack/tier.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

constexpr size_t kUploadChunkBytes = 1 << 20;

using fleet_calls::FromGrpc;

bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::INTERNAL ||
         code == grpc::StatusCode::UNKNOWN ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

ModelInfo FromProto(const v1::ModelVersion& v) {
  ModelInfo info;
  info.model = v.model();
  info.version = v.version();
  info.description = v.description();
  info.layer_policy = v.layer_policy();
  info.source_bytes = v.source_bytes();
  info.tensors = v.tensors_size();
  for (const auto& t : v.tensors()) {
    if (t.dtype().find("float") == std::string::npos) continue;
    int64_t n = 1;
    for (int64_t d : t.shape()) n *= d;
    info.float_weights += n;
  }
  auto accuracy = [](const v1::Accuracy& a) {
    return AccuracyFigures{a.top1(), a.top2(), a.examples()};
  };
  info.has_eval_bundle = v.has_eval_bundle();
  if (v.has_reference_accuracy())
    info.reference_accuracy = accuracy(v.reference_accuracy());
  info.base_version = v.base_version();
  for (const auto& t : v.tiers()) {
    TierSummary tier{t.name(), v1::TierInfo::State_Name(t.state()), t.bytes(),
                     t.bits_per_weight(), t.worst_sqnr_db()};
    tier.worst_layer_sqnr_db = t.has_worst_layer_sqnr_db()
                                   ? t.worst_layer_sqnr_db()
                                   : t.worst_sqnr_db();
    tier.worst_layer = t.worst_layer();
    if (t.has_accuracy()) tier.accuracy = accuracy(t.accuracy());
    for (const auto& l : t.layers()) {
      tier.layers.push_back({l.name(), v1::LayerCodec_Name(l.codec()),
                             l.bytes(), l.bits_per_weight(), l.sqnr_db(),
                             l.qp()});
      if (l.quant_scheme() != v1::QUANT_SCHEME_UNSPECIFIED) {
        tier.layers.back().quant_scheme = std::string(
            QuantSchemeName(static_cast<QuantScheme>(l.quant_scheme() - 1)));
      }
    }
    tier.error = t.error();
    info.tiers.push_back(std::move(tier));
  }
  return info;
}

// Tensors by their position in the version (refinement manifests send them out
// of order).
std::vector<RebuiltTensor> InTensorOrder(
    std::vector<std::pair<uint32_t, RebuiltTensor>> indexed) {
  std::stable_sort(
      indexed.begin(), indexed.end(),
      [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<RebuiltTensor> tensors;
  tensors.reserve(indexed.size());
  for (auto& [index, tensor] : indexed) tensors.push_back(std::move(tensor));
  return tensors;
}

// Decodes and verifies received layers on worker threads while the stream goes
// on.
class DecodePool {
 public:
  // `hold`: queue layers without decoding them until Finish() (download, then
  // decode). Delta layers decode against `bases`, where HEVC layers are kept
  // for later deltas too.
  DecodePool(int threads, size_t layers, bool hold, BaseStore* bases)
      : bases_(bases), results_(layers), hold_(hold) {
    if (threads <= 0)
      threads =
          static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~DecodePool() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& t : workers_) t.join();
  }
  void Submit(size_t index, std::string bytes, v1::ManifestLayer expected) {
    absl::MutexLock lock(&mu_);
    queue_.push_back({index, std::move(bytes), std::move(expected)});
  }
  int backlog() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(queue_.size()) + running_;
  }
  int decoded() {
    absl::MutexLock lock(&mu_);
    return decoded_;
  }
  // Waits for every submitted layer; returns the results (an error per failed
  // layer).
  std::vector<absl::StatusOr<RebuiltTensor>> Finish() {
    absl::MutexLock lock(&mu_);
    hold_ = false;
    mu_.Await(absl::Condition(
        +[](DecodePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
          return p->queue_.empty() && p->running_ == 0;
        },
        this));
    return results_;
  }

 private:
  struct Job {
    size_t index;
    std::string bytes;
    v1::ManifestLayer expected;
  };

  absl::StatusOr<RebuiltTensor> Decode(const Job& job) {
    const auto span = absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(job.bytes.data()), job.bytes.size());
    const Sha256Digest digest = Sha256(span);
    if (std::string(digest.begin(), digest.end()) !=
        job.expected.blob_sha256()) {
      return absl::DataLossError(absl::StrCat(
          "layer '", job.expected.name(),
          "': received bytes do not match the manifest's SHA-256"));
    }
    size_t consumed = 0;
    ASSIGN_OR_RETURN(const PackedLayer layer,
                     ParsePackedLayer(span, &consumed));
    if (layer.name != job.expected.name() || consumed != span.size()) {
      return absl::DataLossError(
          absl::StrCat("layer '", job.expected.name(),
                       "': packed layer does not match the manifest"));
    }
    if (layer.codec == LayerCodec::kHevcDelta) {
      ASSIGN_OR_RETURN(const std::vector<uint8_t> base,
                       bases_->Get(layer.base_sha256));
      return DecodeLayerDelta(base, layer, 1);
    }
    ASSIGN_OR_RETURN(RebuiltTensor tensor, DecodeLayer(layer, 1));
    // The base of a later delta (a base entry of a progressive pull is kept
    // already).
    if (layer.codec == LayerCodec::kHevc && !layer.lossless &&
        !job.expected.is_base())
      bases_->Store(span);
    return tensor;
  }

  void Work() {
    while (true) {
      Job job;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](DecodePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return p->stopping_ || (!p->hold_ && !p->queue_.empty());
            },
            this));
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
        ++running_;
      }
      absl::StatusOr<RebuiltTensor> result = Decode(job);
      absl::MutexLock lock(&mu_);
      if (!result.ok())
        result = absl::Status(absl::StatusCode::kDataLoss,
                              result.status().message());
      results_[job.index] = std::move(result);
      --running_;
      ++decoded_;
    }
  }

  BaseStore* const bases_;
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::StatusOr<RebuiltTensor>> results_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int decoded_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // joined by the destructor
};

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
    ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes,
                     ReadFileBytes(options.checkpoint_path));
    if (options.eval_module_path.empty() != options.eval_data_path.empty()) {
      return absl::InvalidArgumentError(
          "an evaluation bundle needs both the module and the data file");
    }
    std::vector<uint8_t> module, data;
    if (!options.eval_module_path.empty()) {
      ASSIGN_OR_RETURN(module, ReadFileBytes(options.eval_module_path));
      ASSIGN_OR_RETURN(data, ReadFileBytes(options.eval_data_path));
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
    header->set_total_bytes(bytes.size());
    header->set_eval_module_bytes(module.size());
    header->set_eval_data_bytes(data.size());
    bool open = writer->Write(request);
    auto send = [&](const std::vector<uint8_t>& file,
                    std::string* (v1::RegisterModelRequest::*field)()) {
      for (size_t offset = 0; open && offset < file.size();
           offset += kUploadChunkBytes) {
        request.Clear();
        (request.*field)()->assign(
            reinterpret_cast<const char*>(file.data()) + offset,
            std::min(kUploadChunkBytes, file.size() - offset));
        open = writer->Write(request);
      }
    };
    send(bytes, &v1::RegisterModelRequest::mutable_chunk);
    send(module, &v1::RegisterModelRequest::mutable_eval_module_chunk);
    send(data, &v1::RegisterModelRequest::mutable_eval_data_chunk);
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
  // One pull in progress: what arrived so far and where it goes.
  struct PullState {
    std::string version, tier;
    v1::Manifest manifest;
    std::vector<std::string> layers;  // bytes of the layer being received
    size_t layer = 0;                 // the next layer to complete
    std::unique_ptr<DecodePool> pool;
    PullProgress progress;
    bool version_changed = false;
    BaseStore* bases = nullptr;
    std::chrono::steady_clock::time_point start;
    // Progressive pulls: the coarse model is complete when the layers before
    // the first refinement layer are in; it is handed over once.
    std::string coarse_tier;  // empty: not progressive
    size_t first_refinement = 0;
    bool coarse_attempted = false;
    CoarseModel coarse;  // tier set once handed over
    absl::Status
        failure;  // a local failure that ended the stream (not retried)
  };
  // Reads the stream from (layer, offset), handing complete layers to the pool
  // (bases sent along go to the base store). `only_layer` >= 0: that layer
  // alone.
  grpc::Status Stream(const PullOptions& options, PullState* state,
                      int only_layer = -1);
  // A pull with the held bases of `bases`; the decoded tensors (bases sent
  // along excluded).
  absl::StatusOr<std::vector<RebuiltTensor>> PullOnce(
      const PullOptions& options, PullState* state, PullResult* result);
  // Progressive pulls: decodes what has arrived of the coarse model, writes it
  // and calls on_coarse. Errors: the coarse model could not be written.
  absl::Status HandOverCoarse(const PullOptions& options, PullState* state);

  const ConnectOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::Admin::Stub> admin_;
  const std::unique_ptr<v1::Distribution::Stub> distribution_;
  // For rate-limited pulls: a fixed 64 KiB receive window (no BDP growth), so
  // that pacing the reads slows the sender instead of filling buffers at full
  // speed.
  const std::unique_ptr<v1::Distribution::Stub> paced_distribution_;
};

grpc::Status GrpcClient::Stream(const PullOptions& options, PullState* state,
                                int only_layer) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::PullRequest request;
  request.set_model(options.model);
  request.set_version(state->version);
  request.mutable_tier()->set_name(state->tier);
  std::vector<std::string>& layers = state->layers;
  request.set_resume_layer(static_cast<uint32_t>(state->layer));
  request.set_resume_offset(
      state->layer < layers.size() ? layers[state->layer].size() : 0);
  if (state->coarse_tier.empty()) {
    for (std::string& held : state->bases->HeldRaw())
      request.add_held_blob_sha256(std::move(held));
  }
  auto reader =
      (options.max_bytes_per_second > 0 ? paced_distribution_ : distribution_)
          ->Pull(&context, request);
  v1::PullResponse response;
  PullProgress& progress = state->progress;
  while (reader->Read(&response)) {
    if (options.cancel && options.cancel->load()) {
      context.TryCancel();
      break;
    }
    if (response.has_manifest()) {
      if (state->manifest.layers_size() == 0) {
        state->manifest = response.manifest();
        layers.assign(state->manifest.layers_size(), "");
        progress.total_bytes = state->manifest.total_bytes();
        progress.layers_total = state->manifest.layers_size();
        state->pool =
            std::make_unique<DecodePool>(options.decode_threads, layers.size(),
                                         !options.pipelined, state->bases);
        state->first_refinement = layers.size();
        for (int i = 0; i < state->manifest.layers_size(); ++i) {
          const v1::ManifestLayer& layer = state->manifest.layers(i);
          if (!layer.is_base() &&
              !layer.base_blob_sha256()
                   .empty()) {  // a refinement of a base entry
            state->first_refinement = static_cast<size_t>(i);
            break;
          }
        }
      } else if (response.manifest().SerializeAsString() !=
                 state->manifest.SerializeAsString()) {
        state->version_changed = true;  // never mix two versions' layers
        context.TryCancel();
        break;
      }
      continue;
    }
    const v1::LayerChunk& chunk = response.chunk();
    const size_t i = state->layer;
    if (chunk.layer() != i || chunk.offset() != layers[i].size()) {
      context.TryCancel();
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "stream out of order");
    }
    std::string& bytes = layers[i];
    bytes += chunk.data();
    progress.bytes_received += chunk.data().size();
    if (options.max_bytes_per_second >
        0) {  // pace reads: flow control slows the server to match
      const auto due =
          state->start +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(progress.bytes_received /
                                            options.max_bytes_per_second));
      std::this_thread::sleep_until(due);
    }
    const v1::ManifestLayer& expected = state->manifest.layers(i);
    if (bytes.size() > expected.bytes()) {
      context.TryCancel();
      return grpc::Status(grpc::StatusCode::DATA_LOSS,
                          "layer longer than its manifest entry");
    }
    if (bytes.size() == expected.bytes()) {
      const auto span = absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      if (expected.is_base()) {  // kept before the delta layer that follows
                                 // needs it
        const Sha256Digest digest = Sha256(span);
        if (std::string(digest.begin(), digest.end()) !=
            expected.blob_sha256()) {
          context.TryCancel();
          return grpc::Status(
              grpc::StatusCode::DATA_LOSS,
              absl::StrCat("the base of layer '", expected.name(),
                           "' does not match its SHA-256"));
        }
        state->bases->Keep(digest, span);
        if (!state->coarse_tier.empty())
          state->pool->Submit(i, std::move(bytes), expected);  // a coarse layer
      } else {
        state->pool->Submit(i, std::move(bytes), expected);
      }
      bytes.clear();
      bytes.shrink_to_fit();
      ++state->layer;
      if (!state->coarse_tier.empty() && !state->coarse_attempted &&
          state->layer == state->first_refinement && only_layer < 0) {
        state->failure = HandOverCoarse(options, state);
        if (!state->failure.ok()) {
          context.TryCancel();
          break;
        }
      }
      if (only_layer >= 0) {
        context.TryCancel();
        break;
      }
    }
    if (options.progress) {
      progress.layers_decoded = state->pool->decoded();
      progress.decode_backlog = state->pool->backlog();
      progress.seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - state->start)
                             .count();
      options.progress(progress);
    }
  }
  grpc::Status status = reader->Finish();
  if (state->version_changed || only_layer >= 0 ||
      (options.cancel && options.cancel->load()) || !state->failure.ok()) {
    return grpc::Status::OK;
  }
  return status;
}

absl::StatusOr<std::vector<RebuiltTensor>> GrpcClient::PullOnce(
    const PullOptions& options, PullState* state, PullResult* result) {
  for (int attempt = 0;; ++attempt) {
    grpc::Status status = Stream(options, state);
    RETURN_IF_ERROR(state->failure);
    if (state->version_changed) {
      return absl::AbortedError(absl::StrCat(options.model, "/", state->version,
                                             " changed during the pull"));
    }
    if (options.cancel && options.cancel->load())
      return absl::CancelledError("pull cancelled");
    if (status.ok() && state->manifest.layers_size() > 0 &&
        state->layer == state->layers.size())
      break;
    if (status.ok() && state->manifest.layers_size() == 0)
      return absl::DataLossError("the server sent no manifest");
    if (!status.ok() &&
        (!Retryable(status.error_code()) || attempt >= options.max_reconnects))
      return FromGrpc(status);
    ++result->reconnects;
    state->progress.reconnects = result->reconnects;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(5000, 100 << std::min(attempt, 6))));
  }
  const v1::Manifest& manifest = state->manifest;
  std::vector<absl::StatusOr<RebuiltTensor>> decoded = state->pool->Finish();
  std::vector<std::pair<uint32_t, RebuiltTensor>> tensors;
  for (size_t i = 0; i < decoded.size(); ++i) {
    if (manifest.layers(i).is_base()) continue;
    const bool delta = manifest.layers(i).codec() == v1::LAYER_CODEC_HEVC_DELTA;
    if (!decoded[i].ok() && delta)
      return decoded[i]
          .status();  // its base, most likely: the caller pulls whole
    if (!decoded[i].ok()) {
      // Fetch a layer that failed verification once more, alone.
      ++result->layers_refetched;
      const size_t resume = state->layer;
      state->layer = i;
      state->layers[i].clear();
      grpc::Status status = Stream(options, state, static_cast<int>(i));
      const bool fetched = state->layer == i + 1;
      state->layer = resume;
      if (!status.ok() || !fetched) {
        return FromGrpc(status.ok() ? grpc::Status(grpc::StatusCode::DATA_LOSS,
                                                   "refetch failed")
                                    : status);
      }
      decoded[i] = state->pool->Finish()[i];
      if (!decoded[i].ok()) {
        return absl::DataLossError(
            absl::StrCat(decoded[i].status().message(), " (after a refetch)"));
      }
    }
    result->delta_layers += delta;
    tensors.emplace_back(manifest.layers(i).tensor_index(),
                         *std::move(decoded[i]));
  }
  result->bytes = manifest.total_bytes();
  result->coarse = state->coarse;
  return InTensorOrder(std::move(tensors));
}

absl::Status GrpcClient::HandOverCoarse(const PullOptions& options,
                                        PullState* state) {
  state->coarse_attempted = true;
  std::vector<absl::StatusOr<RebuiltTensor>> decoded = state->pool->Finish();
  std::vector<std::pair<uint32_t, RebuiltTensor>> tensors;
  for (size_t i = 0; i < state->first_refinement; ++i) {
    if (!decoded[i].ok()) {  // not usable: the pull goes on to the refined
                             // model, which refetches
      std::fprintf(stderr, "weightcast: no coarse model: %s\n",
                   std::string(decoded[i].status().message()).c_str());
      return absl::OkStatus();
    }
    tensors.emplace_back(
        state->manifest.layers(static_cast<int>(i)).tensor_index(),
        *std::move(decoded[i]));
  }
  CoarseModel coarse{state->coarse_tier, options.coarse_output_path,
                     state->progress.bytes_received,
                     std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - state->start)
                         .count()};
  if (!coarse.output_path.empty()) {
    RETURN_IF_ERROR(WriteCheckpoint(
        InTensorOrder(std::move(tensors)),
        options.int8_output ? OutputKind::kInt8 : OutputKind::kFloat,
        coarse.output_path));
  }
  state->coarse = coarse;
  if (options.on_coarse) options.on_coarse(coarse);
  return absl::OkStatus();
}

absl::StatusOr<PullResult> GrpcClient::Pull(const PullOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // A selection by bytes, fidelity, accuracy or link speed waits for the
  // tiers' sizes (client/sdk/tier_wait.h).
  ASSIGN_OR_RETURN(const auto described,
                   DescribeAndSelectTier(*this, options,
                                         absl::Now() + options_.call_timeout));
  const ModelInfo& info = described.first;
  const std::string& selected = described.second;
  std::string tier = selected, coarse_tier;
  if (!options.coarse_tier.empty()) {
    ASSIGN_OR_RETURN(const TierSpec coarse, ParseTier(options.coarse_tier));
    if (!CanBeRefined(coarse)) {
      return absl::InvalidArgumentError(
          absl::StrCat("coarse tier '", options.coarse_tier,
                       "' is not a qNN or budget-N tier"));
    }
    if (auto refinement = RefinementTierName(options.coarse_tier, selected);
        refinement.ok()) {
      tier = *refinement;
      coarse_tier = options.coarse_tier;
    }
  }
  PullResult result{info.version, tier};
  BaseStore bases(options.base_dir);
  auto pull = [&] {
    PullState state;
    state.version = info.version;
    state.tier = tier;
    state.bases = &bases;
    state.start = start;
    state.coarse_tier = coarse_tier;
    return PullOnce(options, &state, &result);
  };
  absl::StatusOr<std::vector<RebuiltTensor>> tensors = pull();
  if (!tensors.ok() && coarse_tier.empty() && !bases.HeldRaw().empty() &&
      tensors.status().code() == absl::StatusCode::kDataLoss) {
    // A held base was missing or damaged: drop what was held and pull every
    // layer whole.
    std::fprintf(stderr, "weightcast: %s; pulling %s/%s without deltas\n",
                 std::string(tensors.status().message()).c_str(),
                 options.model.c_str(), info.version.c_str());
    bases.DiscardDamaged();
    bases.Forget();
    result = PullResult{info.version, tier};
    result.delta_fallback = true;
    tensors = pull();
  }
  RETURN_IF_ERROR(tensors.status());
  if (!options.output_path.empty()) {
    RETURN_IF_ERROR(WriteCheckpoint(
        *tensors, options.int8_output ? OutputKind::kInt8 : OutputKind::kFloat,
        options.output_path));
  }
  if (options.output_model != nullptr) {
    ASSIGN_OR_RETURN(
        *options.output_model,
        OutputModel(*tensors, options.int8_output ? OutputKind::kInt8
                                                  : OutputKind::kFloat));
  }
  result.bases_needed = bases.Needed();
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

}  // namespace

uint64_t RolloutInfo::Devices(const std::string& version,
                              const std::string& state) const {
  uint64_t n = 0;
  for (const Count& c : counts)
    n += c.version == version && c.state == state ? c.devices : 0;
  return n;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const ConnectOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // A new Client connects afresh: with gRPC's global subchannel pool it would
  // inherit the reconnect backoff of an earlier client's failed connection to
  // the same address, and fail fast with UNAVAILABLE although the server is up
  // again.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!options.tls_root_certs_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_cert_chain = options.tls_cert_chain_pem;
    ssl.pem_private_key = options.tls_private_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateCustomChannel(options.address, credentials, args);
  grpc::ChannelArguments paced = args;
  paced.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  paced.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  paced.SetInt("weightcast.paced",
               1);  // a distinct channel, not shared with the unpaced one
  auto paced_channel =
      grpc::CreateCustomChannel(options.address, credentials, paced);
  if (!channel || !paced_channel)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot make a channel to ", options.address));
  return std::unique_ptr<Client>(std::make_unique<GrpcClient>(
      options, std::move(channel), std::move(paced_channel)));
}

}  // namespace weightcast
