#include "client/sdk/decode_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/pack/delta_codec.h"
#include "common/pack/layer_codec.h"
#include "common/pack/layer_tiles.h"
#include "common/pack/packed_layer.h"

namespace weightcast {

DecodePool::DecodePool(int threads, size_t layers, bool hold, BaseStore* bases,
                       Sink sink, bool tile_jobs)
    : bases_(bases),
      sink_(std::move(sink)),
      tile_jobs_(tile_jobs),
      results_(layers),
      hold_(hold) {
  if (threads <= 0)
    threads =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

DecodePool::~DecodePool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void DecodePool::Submit(size_t index, std::string bytes,
                        v1::ManifestLayer expected) {
  absl::MutexLock lock(&mu_);
  queued_bytes_ += bytes.size();
  queue_.push_back({index, std::move(bytes), std::move(expected)});
}

void DecodePool::WaitForRoom() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](DecodePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
        return p->hold_ || p->queued_bytes_ <= kMaxQueuedBytes;
      },
      this));
}

int DecodePool::backlog() {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size()) + running_;
}

int DecodePool::decoded() {
  absl::MutexLock lock(&mu_);
  return decoded_;
}

void DecodePool::Wait() {
  absl::MutexLock lock(&mu_);
  hold_ = false;
  mu_.Await(absl::Condition(
      +[](DecodePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
        return p->queue_.empty() && p->running_ == 0;
      },
      this));
}

absl::StatusOr<RebuiltTensor> DecodePool::Take(size_t index) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<RebuiltTensor> result = std::move(results_[index]);
  results_[index] = absl::DataLossError("layer result already taken");
  return result;
}

absl::Status DecodePool::Check(size_t index) {
  absl::MutexLock lock(&mu_);
  return results_[index].status();
}

void DecodePool::Restore(size_t index, RebuiltTensor tensor) {
  absl::MutexLock lock(&mu_);
  results_[index] = std::move(tensor);
}

absl::StatusOr<PackedLayer> DecodePool::Parse(const Job& job) {
  const auto span = absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(job.bytes.data()), job.bytes.size());
  const Sha256Digest digest = Sha256(span);
  if (std::string(digest.begin(), digest.end()) != job.expected.blob_sha256()) {
    return absl::DataLossError(
        absl::StrCat("layer '", job.expected.name(),
                     "': received bytes do not match the manifest's SHA-256"));
  }
  size_t consumed = 0;
  ASSIGN_OR_RETURN(PackedLayer layer, ParsePackedLayer(span, &consumed));
  if (layer.name != job.expected.name() || consumed != span.size()) {
    return absl::DataLossError(
        absl::StrCat("layer '", job.expected.name(),
                     "': packed layer does not match the manifest"));
  }
  return layer;
}

absl::StatusOr<RebuiltTensor> DecodePool::DecodeWhole(
    const PackedLayer& layer) {
  if (layer.codec == LayerCodec::kHevcDelta) {
    ASSIGN_OR_RETURN(const std::vector<uint8_t> base,
                     bases_->Get(layer.base_sha256));
    return DecodeLayerDelta(base, layer, 1);
  }
  return DecodeLayer(layer, 1);
}

void DecodePool::Complete(const Job& job, const PackedLayer* layer,
                          absl::StatusOr<RebuiltTensor> result) {
  if (!result.ok()) {
    result =
        absl::Status(absl::StatusCode::kDataLoss, result.status().message());
  } else {
    // The base of a later delta (a base entry of a progressive pull is kept
    // already).
    if (layer->codec == LayerCodec::kHevc && !layer->lossless &&
        !job.expected.is_base()) {
      bases_->Store(absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(job.bytes.data()),
          job.bytes.size()));
    }
    if (sink_ && !job.expected.is_base()) {
      // Written out on this worker (no lock held); the pool keeps no copy.
      const absl::Status sunk = sink_(job.index, *std::move(result));
      result = sunk.ok() ? absl::StatusOr<RebuiltTensor>(RebuiltTensor{})
                         : absl::StatusOr<RebuiltTensor>(sunk);
    }
  }
  absl::MutexLock lock(&mu_);
  results_[job.index] = std::move(result);
  --running_;
  ++decoded_;
}

void DecodePool::RunTile(const std::shared_ptr<TiledLayer>& tiled,
                         size_t tile) {
  const absl::Status status =
      DecodeLayerTile(tiled->layer, tile, absl::MakeSpan(tiled->values));
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && tiled->status.ok()) tiled->status = status;
    if (++tiled->tiles_done < tiled->layer.tiles.size()) return;
  }
  // The last tile: every other tile's job is done with the layer.
  absl::StatusOr<RebuiltTensor> result =
      tiled->status.ok()
          ? FinishTiledDecode(tiled->layer, std::move(tiled->values))
          : absl::StatusOr<RebuiltTensor>(tiled->status);
  Complete(tiled->job, &tiled->layer, std::move(result));
}

void DecodePool::Work() {
  while (true) {
    std::shared_ptr<TiledLayer> tiled;
    size_t tile = 0;
    Job job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](DecodePool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->stopping_ || !p->tiled_.empty() ||
                   (!p->hold_ && !p->queue_.empty());
          },
          this));
      if (!tiled_.empty()) {
        tiled = tiled_.front();
        tile = tiled->next_tile++;
        if (tiled->next_tile == tiled->layer.tiles.size()) tiled_.pop_front();
      } else if (queue_.empty()) {
        return;
      } else {
        job = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= job.bytes.size();
        ++running_;
      }
    }
    if (tiled) {
      RunTile(tiled, tile);
      continue;
    }
    absl::StatusOr<PackedLayer> layer = Parse(job);
    if (!layer.ok()) {
      Complete(job, nullptr, layer.status());
      continue;
    }
    if (tile_jobs_ && DecodesByTile(*layer)) {
      absl::StatusOr<std::vector<int8_t>> values = StartTiledDecode(*layer);
      if (!values.ok()) {
        Complete(job, &*layer, values.status());
        continue;
      }
      auto started = std::make_shared<TiledLayer>();
      started->job = std::move(job);
      started->layer = *std::move(layer);
      started->values = *std::move(values);
      {
        absl::MutexLock lock(&mu_);
        started->next_tile = 1;  // tile 0 is this worker's
        tiled_.push_back(started);
      }
      RunTile(started, 0);
      continue;
    }
    absl::StatusOr<RebuiltTensor> result = DecodeWhole(*layer);
    Complete(job, &*layer, std::move(result));
  }
}

}  // namespace weightcast
