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

namespace {

int ThreadCount(int threads) {
  return threads > 0 ? threads
                     : static_cast<int>(
                           std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

DecodePool::DecodePool(int threads, size_t layers, bool hold, BaseStore* bases,
                       Sink sink, bool tile_jobs, RowsSink rows_sink)
    : bases_(bases),
      sink_(std::move(sink)),
      tile_jobs_(tile_jobs),
      rows_sink_(std::move(rows_sink)),
      threads_(ThreadCount(threads)),
      results_(layers),
      hold_(hold) {
  for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { Work(); });
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
                          absl::StatusOr<RebuiltTensor> result, bool written) {
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
    if (sink_ && !written && !job.expected.is_base()) {
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

void DecodePool::RunBandTile(const std::shared_ptr<TiledLayer>& tiled,
                             size_t tile) {
  const PackedLayer& layer = tiled->layer;
  const int64_t band_index = TileBand(layer, tile);
  std::vector<int8_t>* values;
  {
    absl::MutexLock lock(&mu_);
    values = &tiled->bands.at(band_index).values;  // a map's node: stable
  }
  const absl::Status status = DecodeLayerTile(
      layer, tile, absl::MakeSpan(*values), BandRows(layer, band_index).first);
  mu_.Lock();
  if (!status.ok() && tiled->status.ok()) tiled->status = status;
  --tiled->bands.at(band_index).tiles_left;
  // Complete bands are written in order from the next one on, by one worker
  // at a time (the others leave theirs to it).
  if (tiled->writing) {
    mu_.Unlock();
    return;
  }
  tiled->writing = true;
  // Bounded: one round per band of the layer.
  while (true) {
    const auto next = tiled->bands.find(tiled->next_band);
    if (next == tiled->bands.end() || next->second.tiles_left > 0) break;
    std::vector<int8_t> band = std::move(next->second.values);
    tiled->bands.erase(next);
    const int64_t row0 = BandRows(layer, tiled->next_band).first;
    const bool failed = !tiled->status.ok();
    mu_.Unlock();
    absl::Status written;
    if (!failed) {
      tiled->hasher.Update(absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(band.data()), band.size()));
      written = tiled->rows->Rows(row0, absl::MakeSpan(band));
    }
    band = {};  // freed before the next band
    mu_.Lock();
    if (!written.ok() && tiled->status.ok()) tiled->status = written;
    ++tiled->next_band;
  }
  tiled->writing = false;
  const bool last = tiled->next_band == BandCount(layer);
  absl::Status result = tiled->status;
  mu_.Unlock();
  if (!last) return;
  // This worker wrote the last band: it finishes the layer.
  if (result.ok()) {
    const Sha256Digest digest = tiled->hasher.Finish();
    if (digest != layer.decoded_sha256) {
      result = absl::DataLossError(absl::StrCat(
          "layer '", layer.name, "': SHA-256 of the decoded data is ",
          DigestToHex(digest), ", expected ",
          DigestToHex(layer.decoded_sha256)));
    }
  }
  if (result.ok()) result = tiled->rows->Finish();
  Complete(tiled->job, &layer,
           result.ok() ? absl::StatusOr<RebuiltTensor>(RebuiltTensor{})
                       : absl::StatusOr<RebuiltTensor>(result),
           /*written=*/true);
}

bool DecodePool::TileReady(const TiledLayer& tiled) const {
  if (!tiled.rows) return true;
  const int64_t band = TileBand(tiled.layer, tiled.next_tile);
  return band < tiled.next_band + threads_ || tiled.bands.count(band) > 0;
}

size_t DecodePool::HandOut(TiledLayer& tiled) {
  const size_t tile = tiled.next_tile++;
  if (tiled.rows) {
    const int64_t band = TileBand(tiled.layer, tile);
    if (tiled.bands.count(band) == 0) {
      Band& started = tiled.bands[band];
      started.values.resize(static_cast<size_t>(
          BandRows(tiled.layer, band).second * tiled.layer.grid.cols));
      started.tiles_left = tiled.layer.grid.ColTiles();
    }
  }
  return tile;
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
            return (!p->tiled_.empty() && p->TileReady(*p->tiled_.front())) ||
                   (!p->queue_.empty() && (!p->hold_ || p->stopping_)) ||
                   (p->stopping_ && p->tiled_.empty() && p->queue_.empty());
          },
          this));
      if (!tiled_.empty() && TileReady(*tiled_.front())) {
        tiled = tiled_.front();
        tile = HandOut(*tiled);
        if (tiled->next_tile == tiled->layer.tiles.size()) tiled_.pop_front();
      } else if (queue_.empty()) {
        return;  // stopping, and nothing left to hand out
      } else {
        job = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= job.bytes.size();
        ++running_;
      }
    }
    if (tiled) {
      tiled->rows ? RunBandTile(tiled, tile) : RunTile(tiled, tile);
      continue;
    }
    absl::StatusOr<PackedLayer> layer = Parse(job);
    if (!layer.ok()) {
      Complete(job, nullptr, layer.status());
      continue;
    }
    if (tile_jobs_ && DecodesByTile(*layer)) {
      absl::Status started_ok = CheckTiledLayer(*layer);
      auto started = std::make_shared<TiledLayer>();
      if (started_ok.ok() && rows_sink_ && !job.expected.is_base()) {
        absl::StatusOr<std::unique_ptr<RowsWriter>> rows =
            rows_sink_(job.index, *layer);
        if (rows.ok()) started->rows = *std::move(rows);
        started_ok = rows.status();
      }
      if (!started_ok.ok()) {
        Complete(job, &*layer, started_ok);
        continue;
      }
      if (!started->rows) {  // the whole layer's int8 values
        started->values.resize(
            static_cast<size_t>(layer->grid.rows * layer->grid.cols));
      }
      started->job = std::move(job);
      started->layer = *std::move(layer);
      {
        absl::MutexLock lock(&mu_);
        tiled_.push_back(started);
        tile = HandOut(*started);  // tile 0 is this worker's
      }
      started->rows ? RunBandTile(started, tile) : RunTile(started, tile);
      continue;
    }
    absl::StatusOr<RebuiltTensor> result = DecodeWhole(*layer);
    Complete(job, &*layer, std::move(result));
  }
}

}  // namespace weightcast
