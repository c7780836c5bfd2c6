#include "client/sdk/pull.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/sdk/base_store.h"
#include "client/sdk/decode_pool.h"
#include "client/sdk/http_blobs.h"
#include "client/sdk/layer_output.h"
#include "client/sdk/output_layout.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/streaming_writer.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

using fleet_calls::FromGrpc;

// CANCELLED counts: the caller's own cancel is checked first, so it is the
// server's (a replica shutting down cancels what its grace period left).
bool Retryable(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAVAILABLE ||
         code == grpc::StatusCode::CANCELLED ||
         code == grpc::StatusCode::DEADLINE_EXCEEDED ||
         code == grpc::StatusCode::INTERNAL ||
         code == grpc::StatusCode::UNKNOWN ||
         code == grpc::StatusCode::RESOURCE_EXHAUSTED;
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

// One pull in progress: what arrived so far and where it goes.
struct PullState {
  std::string version, tier;
  v1::Manifest manifest;
  std::vector<std::string> layers;  // bytes of the layer being received
  size_t layer = 0;                 // the next layer to complete
  const ModelInfo* info = nullptr;
  // A streamed output (created when the manifest arrives, null when the whole
  // model is written at the end). Declared before the pool: it outlives the
  // workers that write to it.
  bool stream_output = false;
  std::unique_ptr<CheckpointStreamWriter> writer;
  // A progressive pull's streamed coarse output (null: none, or not
  // streamed), written until the coarse model is handed over or given up.
  std::unique_ptr<CheckpointStreamWriter> coarse_writer;
  std::atomic<bool> coarse_open{false};
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
  CoarseModel coarse;    // tier set once handed over
  absl::Status failure;  // a local failure that ended the stream (not retried)
  std::vector<std::string> warnings;  // PullResult::warnings
};

absl::Status HandOverCoarse(const PullOptions& options, PullState* state);

// The manifest's first `layers` entries with base entries as model layers:
// the coarse model of a progressive pull (its base entries and the layers
// coded on their own).
v1::Manifest CoarseManifest(const v1::Manifest& manifest, size_t layers) {
  v1::Manifest coarse;
  for (size_t i = 0; i < layers; ++i) {
    v1::ManifestLayer* layer = coarse.add_layers();
    *layer = manifest.layers(static_cast<int>(i));
    layer->set_is_base(false);
  }
  return coarse;
}

// A streamed output's writers: the output's, and in a progressive pull with a
// coarse output path the coarse model's. None when a layout is not known in
// advance (the whole model is then written at the end); an error for a
// sharded output.
absl::Status CreateWriters(const PullOptions& options, OutputKind kind,
                           PullState* state) {
  absl::StatusOr<std::vector<TensorLayout>> layout =
      OutputLayout(state->manifest, *state->info, kind);
  if (!layout.ok() && options.shard_bytes > 0) return layout.status();
  const bool coarse_file =
      !state->coarse_tier.empty() && !options.coarse_output_path.empty();
  absl::StatusOr<std::vector<TensorLayout>> coarse_layout =
      coarse_file ? OutputLayout(CoarseManifest(state->manifest,
                                                state->first_refinement),
                                 *state->info, kind)
                  : std::vector<TensorLayout>{};
  if (!layout.ok() || !coarse_layout.ok()) return absl::OkStatus();
  ASSIGN_OR_RETURN(state->writer, CheckpointStreamWriter::Create(
                                      options.output_path, *std::move(layout),
                                      options.shard_bytes));
  if (coarse_file) {
    // The coarse output may be the output's path (the agent replaces the
    // coarse model with the refined one): its temporary file is another.
    ASSIGN_OR_RETURN(
        state->coarse_writer,
        CheckpointStreamWriter::Create(
            options.coarse_output_path, *std::move(coarse_layout),
            /*shard_bytes=*/0, /*force_zip64=*/false, ".coarse.tmp"));
    state->coarse_open = true;
  }
  return absl::OkStatus();
}

// When the manifest arrives: the streamed outputs' writers (if the layouts are
// known in advance) and the decode pool that writes to them. In a progressive
// pull the coarse model's layers (before first_refinement) go to the coarse
// output while it is open, and those coded on their own to the output too
// (they are the refined model's as well); a base entry is refined by a later
// delta layer, so it goes to the coarse output alone (nowhere without one).
absl::Status StartDecoding(const PullOptions& options, PullState* state) {
  const OutputKind kind =
      options.int8_output ? OutputKind::kInt8 : OutputKind::kFloat;
  if (state->stream_output)
    RETURN_IF_ERROR(CreateWriters(options, kind, state));
  DecodePool::Sink sink;
  DecodePool::RowsSink rows_sink;
  if (state->writer) {
    const LayerOutput output(state->writer.get(), kind);
    const std::optional<LayerOutput> coarse =
        state->coarse_writer ? std::optional<LayerOutput>(LayerOutput(
                                   state->coarse_writer.get(), kind))
                             : std::nullopt;
    // The coarse output when layer `index` belongs there and it is open.
    const auto coarse_of = [state, coarse](size_t index) {
      return index < state->first_refinement && coarse && state->coarse_open
                 ? &*coarse
                 : nullptr;
    };
    const auto is_base = [state](size_t index) {
      return state->manifest.layers(static_cast<int>(index)).is_base();
    };
    sink = [output, coarse_of, is_base](size_t index, RebuiltTensor tensor) {
      if (const LayerOutput* to = coarse_of(index))
        RETURN_IF_ERROR(to->Write(tensor));
      return is_base(index) ? absl::OkStatus() : output.Write(tensor);
    };
    rows_sink = [output, coarse_of, is_base](size_t index,
                                             const PackedLayer& layer)
        -> absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> {
      if (!is_base(index)) {
        // Rows go to one output: a coarse layer coded on its own is taken
        // whole for both.
        if (coarse_of(index) != nullptr) return nullptr;
        return output.BeginRows(layer);
      }
      if (const LayerOutput* to = coarse_of(index)) return to->BeginRows(layer);
      return nullptr;  // verified whole, for the hand-over, and not kept
    };
  }
  state->pool = std::make_unique<DecodePool>(
      options.decode_threads, state->layers.size(), !options.pipelined,
      state->bases, std::move(sink), options.tile_jobs, std::move(rows_sink));
  return absl::OkStatus();
}

// The first manifest of the pull sets it up (the decode pool and the streamed
// output's writer: a failure there is state->failure; the progress totals,
// where a refinement starts); a later one must be the same, else the version
// changed (state->version_changed: never mix two versions' layers).
void AcceptManifest(const PullOptions& options, const v1::Manifest& manifest,
                    PullState* state) {
  if (state->manifest.layers_size() > 0) {
    if (manifest.SerializeAsString() != state->manifest.SerializeAsString())
      state->version_changed = true;
    return;
  }
  std::vector<std::string>& layers = state->layers;
  state->manifest = manifest;
  layers.assign(state->manifest.layers_size(), "");
  state->progress.total_bytes = state->manifest.total_bytes();
  state->progress.layers_total = state->manifest.layers_size();
  state->first_refinement = layers.size();
  for (int i = 0; i < state->manifest.layers_size(); ++i) {
    const v1::ManifestLayer& layer = state->manifest.layers(i);
    if (!layer.is_base() &&
        !layer.base_blob_sha256().empty()) {  // a refinement of a base entry
      state->first_refinement = static_cast<size_t>(i);
      break;
    }
  }
  state->failure = StartDecoding(options, state);
}

// Whether layer `i` goes to the decode pool: a base entry only in a progressive
// pull (as a layer of the coarse model), elsewhere it is kept for its delta.
bool Decoded(const PullState& state, size_t i) {
  return !state.manifest.layers(static_cast<int>(i)).is_base() ||
         !state.coarse_tier.empty();
}

// The bytes of layer state->layer are all in: a base entry is checked and kept
// for the delta layer that follows, a layer goes to the decode pool, and the
// coarse model of a progressive pull is handed over when its last layer is in
// (`hand_over`; a failure there is state->failure). DATA_LOSS: a base entry
// that does not match its SHA-256.
absl::Status LayerComplete(const PullOptions& options, PullState* state,
                           bool hand_over) {
  const size_t i = state->layer;
  std::string& bytes = state->layers[i];
  const v1::ManifestLayer& expected = state->manifest.layers(i);
  const auto span = absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (expected.is_base()) {  // kept before the delta layer that follows
                             // needs it
    const Sha256Digest digest = Sha256(span);
    if (std::string(digest.begin(), digest.end()) != expected.blob_sha256()) {
      return absl::DataLossError(absl::StrCat("the base of layer '",
                                              expected.name(),
                                              "' does not match its SHA-256"));
    }
    state->bases->Keep(digest, span);
  }
  if (Decoded(*state, i)) state->pool->Submit(i, std::move(bytes), expected);
  bytes.clear();
  bytes.shrink_to_fit();
  state->pool->WaitForRoom();
  ++state->layer;
  if (!state->coarse_tier.empty() && !state->coarse_attempted &&
      state->layer == state->first_refinement && hand_over) {
    state->failure = HandOverCoarse(options, state);
  }
  return absl::OkStatus();
}

// Layer state->layer has `bytes` of its bytes so far: its tiles decode as they
// arrive (PullOptions::decode_arriving), a layer the pool decodes.
void LayerArriving(const PullOptions& options, PullState* state,
                   absl::string_view bytes) {
  const size_t i = state->layer;
  const v1::ManifestLayer& expected =
      state->manifest.layers(static_cast<int>(i));
  if (options.decode_arriving && bytes.size() < expected.bytes() &&
      Decoded(*state, i)) {
    state->pool->Arriving(i, bytes, expected);
  }
}

void ReportProgress(const PullOptions& options, PullState* state) {
  if (!options.progress) return;
  PullProgress& progress = state->progress;
  progress.layers_decoded = state->pool->decoded();
  progress.decode_backlog = state->pool->backlog();
  progress.seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - state->start)
                         .count();
  options.progress(progress);
}

// Reads the stream from (layer, offset), handing complete layers to the pool
// (bases sent along go to the base store). `only_layer` >= 0: that layer alone.
grpc::Status Stream(const PullStubs& stubs, const PullOptions& options,
                    PullState* state, int only_layer = -1) {
  grpc::ClientContext context;
  stubs.prepare(&context);
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
  auto reader = (options.max_bytes_per_second > 0 ? stubs.paced_distribution
                                                  : stubs.distribution)
                    ->Pull(&context, request);
  v1::PullResponse response;
  PullProgress& progress = state->progress;
  while (reader->Read(&response)) {
    if (options.cancel && options.cancel->load()) {
      context.TryCancel();
      break;
    }
    if (response.has_manifest()) {
      AcceptManifest(options, response.manifest(), state);
      if (state->version_changed || !state->failure.ok()) {
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
    if (bytes.size() < expected.bytes()) {
      LayerArriving(options, state, bytes);
    } else {
      if (absl::Status complete = LayerComplete(options, state, only_layer < 0);
          !complete.ok()) {
        context.TryCancel();
        return grpc::Status(grpc::StatusCode::DATA_LOSS,
                            std::string(complete.message()));
      }
      if (!state->failure.ok() || only_layer >= 0) {
        context.TryCancel();
        break;
      }
    }
    ReportProgress(options, state);
  }
  grpc::Status status = reader->Finish();
  if (state->version_changed || only_layer >= 0 ||
      (options.cancel && options.cancel->load()) || !state->failure.ok()) {
    return grpc::Status::OK;
  }
  return status;
}

// Blobs over HTTP (PullOptions::http_blobs; the manifest's blob_base_url,
// weightcastd --blob-base-url): asks for the manifest over gRPC, then GETs
// each layer's blob from state->layer on (resumed with Range, its SHA-256
// checked) and hands it on as the stream would. True when every layer came;
// false at the first failure (then the Pull stream goes on from (layer,
// offset), as after a dropped stream) or when the server names no URL.
bool FetchOverHttp(const PullStubs& stubs, const PullOptions& options,
                   PullState* state, PullResult* result) {
  grpc::ClientContext context;
  stubs.prepare(&context);
  v1::GetManifestRequest request;
  request.set_model(options.model);
  request.set_version(state->version);
  request.mutable_tier()->set_name(state->tier);
  if (state->coarse_tier.empty()) {
    for (std::string& held : state->bases->HeldRaw())
      request.add_held_blob_sha256(std::move(held));
  }
  v1::Manifest manifest;
  if (!stubs.distribution->GetManifest(&context, request, &manifest).ok() ||
      manifest.blob_base_url().empty())
    return false;
  AcceptManifest(options, manifest, state);
  if (!state->failure.ok()) return false;
  HttpBlobsOptions http_options;
  http_options.base_url = manifest.blob_base_url();
  http_options.authorization = stubs.http_authorization;
  http_options.max_bytes_per_second = options.max_bytes_per_second;
  http_options.cancel = options.cancel;
  HttpBlobs http(std::move(http_options));
  while (state->layer < state->layers.size()) {
    const v1::ManifestLayer& expected =
        state->manifest.layers(static_cast<int>(state->layer));
    std::string& bytes = state->layers[state->layer];
    const size_t before = bytes.size();
    const absl::Status fetched =
        http.Fetch(expected.blob_sha256(), expected.bytes(), &bytes,
                   [&](absl::string_view arrived) {
                     LayerArriving(options, state, arrived);
                   });
    if (bytes.size() > before)
      state->progress.bytes_received += bytes.size() - before;
    if (!fetched.ok()) {
      if (fetched.code() != absl::StatusCode::kCancelled) {
        result->warnings.push_back(
            absl::StrCat(fetched.message(), "; the rest over gRPC"));
        result->http_fallback = true;
      }
      return false;
    }
    ++result->http_layers;
    if (!LayerComplete(options, state, /*hand_over=*/true).ok() ||
        !state->failure.ok())
      return false;
    ReportProgress(options, state);
  }
  return true;
}

// A pull with the held bases of `state->bases`; the decoded tensors (bases
// sent along excluded).
absl::StatusOr<std::vector<RebuiltTensor>> PullOnce(const PullStubs& stubs,
                                                    const PullOptions& options,
                                                    PullState* state,
                                                    PullResult* result) {
  const bool all_over_http =
      options.http_blobs && FetchOverHttp(stubs, options, state, result);
  RETURN_IF_ERROR(state->failure);
  for (int attempt = 0; !all_over_http; ++attempt) {
    grpc::Status status = Stream(stubs, options, state);
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
  state->pool->Wait();
  std::vector<std::pair<uint32_t, RebuiltTensor>> tensors;
  for (size_t i = 0; i < state->layers.size(); ++i) {
    if (manifest.layers(i).is_base()) continue;
    absl::StatusOr<RebuiltTensor> decoded = state->pool->Take(i);
    const bool delta = manifest.layers(i).codec() == v1::LAYER_CODEC_HEVC_DELTA;
    if (!decoded.ok() && delta)
      return decoded.status();  // its base, most likely: the caller pulls whole
    if (!decoded.ok() && decoded.status().code() != absl::StatusCode::kDataLoss)
      return decoded.status();  // writing the output failed (a full disk)
    if (!decoded.ok()) {
      // Fetch a layer that failed verification once more, alone.
      ++result->layers_refetched;
      const size_t resume = state->layer;
      state->layer = i;
      state->layers[i].clear();
      grpc::Status status = Stream(stubs, options, state, static_cast<int>(i));
      const bool fetched = state->layer == i + 1;
      state->layer = resume;
      if (!status.ok() || !fetched) {
        return FromGrpc(status.ok() ? grpc::Status(grpc::StatusCode::DATA_LOSS,
                                                   "refetch failed")
                                    : status);
      }
      state->pool->Wait();
      decoded = state->pool->Take(i);
      if (!decoded.ok()) {
        return absl::DataLossError(
            absl::StrCat(decoded.status().message(), " (after a refetch)"));
      }
    }
    result->delta_layers += delta;
    if (state->writer) continue;  // written as it was decoded
    tensors.emplace_back(manifest.layers(i).tensor_index(),
                         *std::move(decoded));
  }
  result->bytes = manifest.total_bytes();
  result->coarse = state->coarse;
  result->warnings.insert(result->warnings.end(), state->warnings.begin(),
                          state->warnings.end());
  if (state->writer) {
    state->pool.reset();  // every worker done with the writer
    RETURN_IF_ERROR(state->writer->Commit());
    result->streamed_output = true;
  }
  return InTensorOrder(std::move(tensors));
}

// Progressive pulls: decodes what has arrived of the coarse model, writes it
// (commits its streamed output) and calls on_coarse. Errors: the coarse model
// could not be written.
absl::Status HandOverCoarse(const PullOptions& options, PullState* state) {
  state->coarse_attempted = true;
  state->pool->Wait();
  // Nothing more goes to a streamed coarse output (a layer refetched later is
  // the refined model's): committed below, or removed with its writer.
  state->coarse_open = false;
  for (size_t i = 0; i < state->first_refinement; ++i) {
    if (const absl::Status status = state->pool->Check(i); !status.ok()) {
      // Not usable: the pull goes on to the refined model, which refetches.
      state->warnings.push_back(
          absl::StrCat("no coarse model: ", status.message()));
      return absl::OkStatus();
    }
  }
  CoarseModel coarse{state->coarse_tier, options.coarse_output_path,
                     state->progress.bytes_received,
                     std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - state->start)
                         .count()};
  if (state->coarse_writer) {
    RETURN_IF_ERROR(state->coarse_writer->Commit());
  } else if (!coarse.output_path.empty()) {
    // The coarse layers are moved out for the write and back after it: the
    // layers coded on their own are part of the refined model too.
    std::vector<std::pair<uint32_t, size_t>> order;  // (tensor, manifest) index
    for (size_t i = 0; i < state->first_refinement; ++i) {
      order.emplace_back(
          state->manifest.layers(static_cast<int>(i)).tensor_index(), i);
    }
    std::stable_sort(
        order.begin(), order.end(),
        [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<RebuiltTensor> tensors;
    tensors.reserve(order.size());
    for (const auto& [tensor_index, i] : order)
      tensors.push_back(*state->pool->Take(i));
    const absl::Status written = WriteCheckpoint(
        tensors, options.int8_output ? OutputKind::kInt8 : OutputKind::kFloat,
        coarse.output_path);
    for (size_t k = 0; k < order.size(); ++k)
      state->pool->Restore(order[k].second, std::move(tensors[k]));
    RETURN_IF_ERROR(written);
  }
  state->coarse = coarse;
  if (options.on_coarse) options.on_coarse(coarse);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PullResult> RunPull(
    const PullStubs& stubs, const ModelInfo& info, const PullOptions& options,
    std::chrono::steady_clock::time_point start) {
  ASSIGN_OR_RETURN(const std::string selected, SelectTier(info, options.tier));
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
  const auto streamable = [](const std::string& path) {
    return absl::EndsWith(path, ".safetensors") || IsTorchSavePath(path);
  };
  // An in-memory output collects the whole model anyway.
  const bool stream_output =
      options.shard_bytes > 0 ||
      (options.stream_output && streamable(options.output_path) &&
       options.output_model == nullptr &&
       (coarse_tier.empty() || options.coarse_output_path.empty() ||
        streamable(options.coarse_output_path)));
  if (options.shard_bytes > 0 &&
      (options.output_path.empty() || !coarse_tier.empty() ||
       options.output_model != nullptr)) {
    return absl::InvalidArgumentError(
        "sharded output needs an output directory and a pull that is not "
        "progressive, into no in-memory model");
  }
  PullResult result{info.version, tier};
  BaseStore bases(options.base_dir);
  auto pull = [&] {
    PullState state;
    state.info = &info;
    state.stream_output = stream_output;
    state.version = info.version;
    state.tier = tier;
    state.bases = &bases;
    state.start = start;
    state.coarse_tier = coarse_tier;
    return PullOnce(stubs, options, &state, &result);
  };
  absl::StatusOr<std::vector<RebuiltTensor>> tensors = pull();
  if (!tensors.ok() && coarse_tier.empty() && !bases.HeldRaw().empty() &&
      tensors.status().code() == absl::StatusCode::kDataLoss) {
    // A held base was missing or damaged: drop what was held and pull every
    // layer whole.
    std::string warning =
        absl::StrCat(tensors.status().message(), "; pulled ", options.model,
                     "/", info.version, " without deltas");
    bases.DiscardDamaged();
    bases.Forget();
    result = PullResult{info.version, tier};
    result.delta_fallback = true;
    result.warnings.push_back(std::move(warning));
    tensors = pull();
  }
  RETURN_IF_ERROR(tensors.status());
  if (!options.output_path.empty() && !result.streamed_output) {
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

}  // namespace weightcast
