#include "server/rpc/services.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/rpc/conversions.h"

namespace weightcast {

namespace {

std::string ResultOf(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return "ok";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "exists";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "too_large";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "deadline";
    default:
      return "error";
  }
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    default:
      return "OTHER";
  }
}

// Starts the server-side clock of one call; null when no deadlines are kept.
std::unique_ptr<CallDeadlines::Guard> StartClock(const RpcLimits& limits,
                                                 grpc::ServerContext* context,
                                                 absl::Duration limit) {
  return limits.deadlines ? limits.deadlines->Watch(context, limit) : nullptr;
}

// Operators may add refinement tiers by asking for them; devices only get what
// the ladder offers.
TierAccess AccessOf(const TokenAuth* auth, const grpc::ServerContext* context) {
  return RoleOf(auth, context) == Role::kAdmin ? TierAccess::kAnyRefinement
                                               : TierAccess::kLadder;
}

grpc::Status TooSlow(const char* what, const char* flag, absl::Duration limit) {
  return grpc::Status(
      grpc::StatusCode::DEADLINE_EXCEEDED,
      absl::StrCat(what, " took longer than the server allows (", flag, " ",
                   absl::ToInt64Seconds(limit), ")"));
}

}  // namespace

grpc::Status AdminService::RegisterModel(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::RegisterModelRequest>* reader,
    v1::RegisterModelResponse* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  const std::unique_ptr<CallDeadlines::Guard> deadline =
      StartClock(limits_, context, limits_.upload_time);
  grpc::Status status = Register(context, reader, response, deadline.get());
  if (!status.ok() && deadline && deadline->expired())
    status = TooSlow("the upload", "--upload-seconds", limits_.upload_time);
  metrics_->RecordRegistration(ResultOf(status));
  return status;
}

grpc::Status AdminService::Register(
    grpc::ServerContext* context,
    grpc::ServerReader<v1::RegisterModelRequest>* reader,
    v1::RegisterModelResponse* response, const CallDeadlines::Guard* deadline) {
  v1::RegisterModelRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message must carry the RegisterHeader");
  }
  const v1::RegisterHeader header = message.header();
  // Three files arrive interleaved in any order: the checkpoint, and the
  // evaluation bundle's module and data. Each goes to its own temporary file,
  // removed on every path out.
  struct Part {
    const char* field;
    uint64_t expected;
    std::string path;
    std::ofstream out;
    uint64_t received = 0;
  };
  Part parts[3] = {{"total_bytes",
                    header.total_bytes(),
                    store_->blobs().TempPath("upload"),
                    {}},
                   {"eval_module_bytes",
                    header.eval_module_bytes(),
                    store_->blobs().TempPath("eval-module"),
                    {}},
                   {"eval_data_bytes",
                    header.eval_data_bytes(),
                    store_->blobs().TempPath("eval-data"),
                    {}}};
  struct Cleanup {
    Part* parts;
    ~Cleanup() {
      for (int i = 0; i < 3; ++i) {
        parts[i].out.close();
        std::remove(
            parts[i].path.c_str());  // moved into the blob store on success
      }
    }
  } cleanup{parts};
  uint64_t received = 0;
  while (reader->Read(&message)) {
    if (context->IsCancelled()) break;
    if (deadline && deadline->expired())
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "");
    const std::string* data = nullptr;
    Part* part = nullptr;
    switch (message.part_case()) {
      case v1::RegisterModelRequest::kChunk:
        data = &message.chunk(), part = &parts[0];
        break;
      case v1::RegisterModelRequest::kEvalModuleChunk:
        data = &message.eval_module_chunk(), part = &parts[1];
        break;
      case v1::RegisterModelRequest::kEvalDataChunk:
        data = &message.eval_data_chunk(), part = &parts[2];
        break;
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "only the first message may carry a header");
    }
    received += data->size();
    if (received > limits_.max_upload_bytes) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("upload exceeds the server's limit of ",
                                       limits_.max_upload_bytes, " bytes"));
    }
    if (!part->out.is_open())
      part->out.open(part->path, std::ios::binary | std::ios::trunc);
    part->out.write(data->data(), static_cast<std::streamsize>(data->size()));
    part->received += data->size();
  }
  if (context->IsCancelled())
    return grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled");
  for (Part& part : parts) {
    if (part.out.is_open()) {
      part.out.flush();
      if (!part.out)
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "could not store the upload (disk full?)");
      part.out.close();
    }
    if (part.expected != 0 && part.expected != part.received) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("header.", part.field, " is ", part.expected, " but ",
                       part.received, " bytes arrived"));
    }
  }
  if (parts[0].received == 0) {
    std::ofstream(
        parts[0].path,
        std::ios::binary |
            std::ios::trunc);  // an empty checkpoint: the reader names it
  }
  RegisterRequest request{header.model(),
                          header.version(),
                          header.description(),
                          header.tier_ladder(),
                          header.layer_policy_json(),
                          parts[1].received ? parts[1].path : "",
                          parts[2].received ? parts[2].path : "",
                          header.base_version()};
  auto version = store_->Register(request, parts[0].path);
  if (!version.ok()) return ToGrpcStatus(version.status());
  if (limits_.encode_on_register) {
    // Registered either way: a ladder that does not start now (the server is
    // shutting down) is encoded on request.
    store_->Warm(version->model, version->version, {}).IgnoreError();
  }
  auto described = store_->Describe(version->model, version->version);
  if (!described.ok()) return ToGrpcStatus(described.status());
  ToProto(described->first, described->second, response->mutable_version());
  return grpc::Status::OK;
}

grpc::Status AdminService::ListModels(grpc::ServerContext* context,
                                      const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok())
    return denied;
  auto models = store_->List();
  if (!models.ok()) return ToGrpcStatus(models.status());
  for (const auto& [name, versions] : *models) {
    auto* model = response->add_models();
    model->set_name(name);
    for (const std::string& v : versions) model->add_versions(v);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::DescribeModel(
    grpc::ServerContext* context, const v1::DescribeModelRequest* request,
    v1::ModelVersion* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok())
    return denied;
  auto described = store_->Describe(request->model(), request->version());
  if (!described.ok()) return ToGrpcStatus(described.status());
  ToProto(described->first, described->second, response);
  return grpc::Status::OK;
}

grpc::Status AdminService::DeleteVersion(
    grpc::ServerContext* context, const v1::DeleteVersionRequest* request,
    v1::DeleteVersionResponse*) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  if (request->version().empty() || request->version() == "latest") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "name the version to delete explicitly");
  }
  return ToGrpcStatus(store_->Delete(request->model(), request->version()));
}

grpc::Status AdminService::WarmTiers(grpc::ServerContext* context,
                                     const v1::WarmTiersRequest* request,
                                     v1::WarmTiersResponse*) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  return ToGrpcStatus(
      store_->Warm(request->model(), request->version(),
                   std::vector<std::string>(request->tiers().begin(),
                                            request->tiers().end())));
}

grpc::Status AdminService::SetDefaultLadder(
    grpc::ServerContext* context, const v1::SetDefaultLadderRequest* request,
    v1::SetDefaultLadderResponse*) {
  if (grpc::Status denied = Allow(limits_, context, Role::kAdmin); !denied.ok())
    return denied;
  return ToGrpcStatus(store_->SetDefaultLadder(request->tier_ladder()));
}

grpc::Status DistributionService::GetManifest(
    grpc::ServerContext* context, const v1::GetManifestRequest* request,
    v1::Manifest* response) {
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok())
    return denied;
  if (draining_.load())
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is draining");
  auto held = HeldBlobs(request->held_blob_sha256());
  if (!held.ok()) return ToGrpcStatus(held.status());
  auto manifest = store_->GetManifest(request->model(), request->version(),
                                      request->tier().name(), *held,
                                      AccessOf(auth_, context));
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  ToProto(*manifest, response);
  response->set_blob_base_url(blob_base_url_);
  return grpc::Status::OK;
}

grpc::Status DistributionService::Pull(
    grpc::ServerContext* context, const v1::PullRequest* request,
    grpc::ServerWriter<v1::PullResponse>* writer) {
  if (grpc::Status denied = Allow(limits_, context, Role::kDevice);
      !denied.ok())
    return denied;
  grpc::Status refused;
  const std::unique_ptr<StreamLimiter::Slot> slot =
      limiter_ ? limiter_->Acquire(*context, &refused) : nullptr;
  if (limiter_ && !slot) return refused;
  metrics_->StreamStarted();
  if (request->resume_layer() != 0 || request->resume_offset() != 0)
    metrics_->RecordResume();
  const std::unique_ptr<CallDeadlines::Guard> deadline =
      StartClock(limits_, context, limits_.pull_time);
  grpc::Status status = Stream(context, request, writer, deadline.get());
  if (!status.ok() && deadline && deadline->expired())
    status = TooSlow("the pull", "--pull-seconds", limits_.pull_time);
  metrics_->StreamEnded();
  if (!status.ok()) metrics_->RecordPullError(CodeName(status.error_code()));
  return status;
}

grpc::Status DistributionService::Stream(
    grpc::ServerContext* context, const v1::PullRequest* request,
    grpc::ServerWriter<v1::PullResponse>* writer,
    const CallDeadlines::Guard* deadline) {
  if (draining_.load())
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is draining");
  context->set_compression_algorithm(
      GRPC_COMPRESS_NONE);  // HEVC and zstd payloads do not compress
  auto held = HeldBlobs(request->held_blob_sha256());
  if (!held.ok()) return ToGrpcStatus(held.status());
  auto manifest = store_->GetManifest(request->model(), request->version(),
                                      request->tier().name(), *held,
                                      AccessOf(auth_, context));
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  const size_t start_layer = request->resume_layer();
  if (start_layer > manifest->layers.size() ||
      (start_layer == manifest->layers.size() &&
       request->resume_offset() != 0) ||
      (start_layer < manifest->layers.size() &&
       request->resume_offset() > manifest->layers[start_layer].bytes)) {
    return grpc::Status(
        grpc::StatusCode::OUT_OF_RANGE,
        absl::StrCat("resume at layer ", start_layer, " offset ",
                     request->resume_offset(), " is outside the manifest (",
                     manifest->layers.size(), " layers)"));
  }
  v1::PullResponse response;
  ToProto(*manifest, response.mutable_manifest());
  response.mutable_manifest()->set_blob_base_url(blob_base_url_);
  if (!writer->Write(response))
    return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  for (size_t i = start_layer; i < manifest->layers.size(); ++i) {
    const LayerRecord& layer = manifest->layers[i];
    auto blob = store_->blobs().OpenForRead(layer.blob_sha256);
    if (!blob.ok() || blob->size() != layer.bytes) {
      return grpc::Status(
          grpc::StatusCode::DATA_LOSS,
          absl::StrCat("layer '", layer.name,
                       "': stored blob is missing or has the wrong size"));
    }
    for (uint64_t offset = i == start_layer ? request->resume_offset() : 0;
         offset < layer.bytes;) {
      if (context->IsCancelled())
        return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
      if (deadline && deadline->expired())
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "");
      v1::LayerChunk* chunk =
          response.mutable_chunk();  // reused: its buffer keeps its capacity
      chunk->set_layer(static_cast<uint32_t>(i));
      chunk->set_offset(offset);
      if (absl::Status read =
              blob->ReadInto(offset, kPullChunkBytes, chunk->mutable_data());
          !read.ok()) {
        return grpc::Status(
            grpc::StatusCode::DATA_LOSS,
            absl::StrCat("layer '", layer.name, "': ", read.message()));
      }
      const size_t sent = chunk->data().size();
      if (!writer->Write(response))
        return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      metrics_->RecordBytesStreamed(manifest->tier, sent);
      offset += sent;
    }
  }
  return grpc::Status::OK;
}

}  // namespace weightcast
