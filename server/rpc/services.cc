#include "server/rpc/services.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/rpc/conversions.h"

namespace weightcast {

namespace {

std::string ResultOf(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::OK: return "ok";
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid";
    case grpc::StatusCode::ALREADY_EXISTS: return "exists";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "too_large";
    default: return "error";
  }
}

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "OTHER";
  }
}

}  // namespace

grpc::Status AdminService::RegisterModel(grpc::ServerContext* context,
                                         grpc::ServerReader<v1::RegisterModelRequest>* reader,
                                         v1::RegisterModelResponse* response) {
  const grpc::Status status = Register(context, reader, response);
  metrics_->RecordRegistration(ResultOf(status));
  return status;
}

grpc::Status AdminService::Register(grpc::ServerContext* context,
                                    grpc::ServerReader<v1::RegisterModelRequest>* reader,
                                    v1::RegisterModelResponse* response) {
  v1::RegisterModelRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must carry the RegisterHeader");
  }
  const v1::RegisterHeader header = message.header();
  const std::string upload = store_->blobs().TempPath("upload");
  uint64_t received = 0;
  {
    std::ofstream out(upload, std::ios::binary | std::ios::trunc);
    while (reader->Read(&message)) {
      if (context->IsCancelled()) break;
      if (!message.has_chunk()) {
        std::remove(upload.c_str());
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "only the first message may carry a header");
      }
      received += message.chunk().size();
      if (received > max_upload_bytes_) {
        out.close();
        std::remove(upload.c_str());
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            absl::StrCat("upload exceeds the server's limit of ", max_upload_bytes_, " bytes"));
      }
      out.write(message.chunk().data(), static_cast<std::streamsize>(message.chunk().size()));
    }
    out.flush();
    if (!out) {
      out.close();
      std::remove(upload.c_str());
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "could not store the upload (disk full?)");
    }
  }
  if (context->IsCancelled()) {
    std::remove(upload.c_str());
    return grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled");
  }
  if (header.total_bytes() != 0 && header.total_bytes() != received) {
    std::remove(upload.c_str());
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("header.total_bytes is ", header.total_bytes(), " but ", received, " bytes arrived"));
  }
  RegisterRequest request{header.model(), header.version(), header.description(), header.tier_ladder(),
                          header.layer_policy_json()};
  auto version = store_->Register(request, upload);
  std::remove(upload.c_str());  // moved into the blob store on success; leftovers on failure
  if (!version.ok()) return ToGrpcStatus(version.status());
  auto described = store_->Describe(version->model, version->version);
  if (!described.ok()) return ToGrpcStatus(described.status());
  ToProto(described->first, described->second, response->mutable_version());
  return grpc::Status::OK;
}

grpc::Status AdminService::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* response) {
  auto models = store_->List();
  if (!models.ok()) return ToGrpcStatus(models.status());
  for (const auto& [name, versions] : *models) {
    auto* model = response->add_models();
    model->set_name(name);
    for (const std::string& v : versions) model->add_versions(v);
  }
  return grpc::Status::OK;
}

grpc::Status AdminService::DescribeModel(grpc::ServerContext*, const v1::DescribeModelRequest* request,
                                         v1::ModelVersion* response) {
  auto described = store_->Describe(request->model(), request->version());
  if (!described.ok()) return ToGrpcStatus(described.status());
  ToProto(described->first, described->second, response);
  return grpc::Status::OK;
}

grpc::Status AdminService::DeleteVersion(grpc::ServerContext*, const v1::DeleteVersionRequest* request,
                                         v1::DeleteVersionResponse*) {
  if (request->version().empty() || request->version() == "latest") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name the version to delete explicitly");
  }
  return ToGrpcStatus(store_->Delete(request->model(), request->version()));
}

grpc::Status AdminService::WarmTiers(grpc::ServerContext*, const v1::WarmTiersRequest* request, v1::WarmTiersResponse*) {
  return ToGrpcStatus(store_->Warm(request->model(), request->version(),
                                   std::vector<std::string>(request->tiers().begin(), request->tiers().end())));
}

grpc::Status AdminService::SetDefaultLadder(grpc::ServerContext*, const v1::SetDefaultLadderRequest* request,
                                            v1::SetDefaultLadderResponse*) {
  return ToGrpcStatus(store_->SetDefaultLadder(request->tier_ladder()));
}

grpc::Status DistributionService::GetManifest(grpc::ServerContext*, const v1::GetManifestRequest* request,
                                              v1::Manifest* response) {
  if (draining_.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining");
  auto manifest = store_->GetManifest(request->model(), request->version(), request->tier().name());
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  ToProto(*manifest, response);
  return grpc::Status::OK;
}

grpc::Status DistributionService::Pull(grpc::ServerContext* context, const v1::PullRequest* request,
                                       grpc::ServerWriter<v1::PullResponse>* writer) {
  metrics_->StreamStarted();
  if (request->resume_layer() != 0 || request->resume_offset() != 0) metrics_->RecordResume();
  const grpc::Status status = Stream(context, request, writer);
  metrics_->StreamEnded();
  if (!status.ok()) metrics_->RecordPullError(CodeName(status.error_code()));
  return status;
}

grpc::Status DistributionService::Stream(grpc::ServerContext* context, const v1::PullRequest* request,
                                         grpc::ServerWriter<v1::PullResponse>* writer) {
  if (draining_.load()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is draining");
  context->set_compression_algorithm(GRPC_COMPRESS_NONE);  // HEVC and zstd payloads do not compress
  auto manifest = store_->GetManifest(request->model(), request->version(), request->tier().name());
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  const size_t start_layer = request->resume_layer();
  if (start_layer > manifest->layers.size() ||
      (start_layer == manifest->layers.size() && request->resume_offset() != 0) ||
      (start_layer < manifest->layers.size() && request->resume_offset() > manifest->layers[start_layer].bytes)) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("resume at layer ", start_layer, " offset ", request->resume_offset(),
                                     " is outside the manifest (", manifest->layers.size(), " layers)"));
  }
  v1::PullResponse response;
  ToProto(*manifest, response.mutable_manifest());
  if (!writer->Write(response)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  for (size_t i = start_layer; i < manifest->layers.size(); ++i) {
    const LayerRecord& layer = manifest->layers[i];
    auto blob = store_->blobs().OpenForRead(layer.blob_sha256);
    if (!blob.ok() || blob->size() != layer.bytes) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, absl::StrCat("layer '", layer.name, "': stored blob is missing or has the wrong size"));
    }
    for (uint64_t offset = i == start_layer ? request->resume_offset() : 0; offset < layer.bytes;) {
      if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
      v1::LayerChunk* chunk = response.mutable_chunk();  // reused: its buffer keeps its capacity
      chunk->set_layer(static_cast<uint32_t>(i));
      chunk->set_offset(offset);
      if (absl::Status read = blob->ReadInto(offset, kPullChunkBytes, chunk->mutable_data()); !read.ok()) {
        return grpc::Status(grpc::StatusCode::DATA_LOSS, absl::StrCat("layer '", layer.name, "': ", read.message()));
      }
      const size_t sent = chunk->data().size();
      if (!writer->Write(response)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      metrics_->RecordBytesStreamed(manifest->tier, sent);
      offset += sent;
    }
  }
  return grpc::Status::OK;
}

}  // namespace weightcast
