#include "client/sdk/decode_pool.h"

#include <algorithm>
#include <map>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/bytes.h"
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

// A band of a layer decoded band by band: its int8 rows, and its tiles not
// decoded yet.
struct Band {
  std::vector<int8_t> values;
  int64_t tiles_left = 0;
};

}  // namespace

struct DecodePool::WholeDecode {
  std::vector<int8_t> values;  // each tile's job writes its own rectangle
  size_t tiles_done = 0;       // guarded by the pool's mu_
};

struct DecodePool::BandDecode {
  std::unique_ptr<RowsWriter> writer;
  // Guarded by the pool's mu_: the bands started and not yet written, the
  // next band to write, and whether a worker is writing.
  std::map<int64_t, Band> bands;
  int64_t next_band = 0;
  bool writing = false;
  Sha256Hasher hasher;  // of the bands written; the writing worker's
};

struct DecodePool::TiledLayer {
  Job job;  // of a layer decoded as it arrives: complete once submitted
  PackedLayer layer;
  size_t next_tile = 0;  // guarded by the pool's mu_
  absl::Status status;   // guarded by the pool's mu_: the first error
  std::variant<WholeDecode, BandDecode> decode;
  // Guarded by the pool's mu_: the tiles whose bytes are in (all but while a
  // layer arrives); whether its bytes are still arriving, and whether its
  // tiles were all decoded meanwhile (Submit then finishes it).
  size_t tiles_in = 0;
  bool arriving = false;
  bool decoded = false;
  // While it arrives, the submitting thread's: where its tiles lie, the
  // bytes seen (and hashed) so far, the tiles copied, and whether a call's
  // bytes were not a longer prefix of the last's.
  TileOffsets offsets;
  uint64_t seen = 0;
  Sha256Hasher hasher;
  size_t copied = 0;
  bool diverged = false;
};

namespace {

// DATA_LOSS naming the layer when its bytes' digest is not its manifest
// entry's.
absl::Status CheckReceived(const Sha256Digest& digest,
                           const v1::ManifestLayer& expected) {
  if (std::string(digest.begin(), digest.end()) == expected.blob_sha256())
    return absl::OkStatus();
  return absl::DataLossError(
      absl::StrCat("layer '", expected.name(),
                   "': received bytes do not match the manifest's SHA-256"));
}

// A status with a representation of its own: absl shares a status's message
// between copies by a reference count in uninstrumented code, which
// ThreadSanitizer cannot follow.
absl::Status OwnCopy(const absl::Status& status) {
  return absl::Status(status.code(), status.message());
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
    AbandonArriving();
  }
  for (std::thread& t : workers_) t.join();
}

void DecodePool::Submit(size_t index, std::string bytes,
                        v1::ManifestLayer expected) {
  std::shared_ptr<TiledLayer> tiled;
  {
    absl::MutexLock lock(&mu_);
    if (const auto it = arriving_.find(index); it != arriving_.end()) {
      tiled = std::move(it->second);
      arriving_.erase(it);
    }
    if (!tiled) {
      queued_bytes_ += bytes.size();
      queue_.push_back({index, std::move(bytes), std::move(expected)});
      return;
    }
  }
  // A layer decoding as it arrived: its last bytes, then its SHA-256.
  Receive(*tiled, bytes);
  absl::Status verified =
      tiled->diverged || tiled->seen != tiled->offsets.end
          ? absl::DataLossError(absl::StrCat(
                "layer '", expected.name(),
                "': submitted bytes are not the bytes that arrived"))
          : CheckReceived(tiled->hasher.Finish(), expected);
  bool finish;
  {
    absl::MutexLock lock(&mu_);
    tiled->job.bytes = std::move(bytes);
    tiled->job.expected = std::move(expected);
    if (!verified.ok() && tiled->status.ok()) tiled->status = verified;
    // Tiles never copied (bytes that failed) are not decoded: the layer has
    // failed.
    tiled->tiles_in = tiled->layer.tiles.size();
    tiled->arriving = false;
    finish = tiled->decoded;
  }
  if (finish) FinishTiled(tiled);
}

void DecodePool::Arriving(size_t index, absl::string_view bytes,
                          const v1::ManifestLayer& expected) {
  if (!tile_jobs_) return;
  std::shared_ptr<TiledLayer> tiled;
  {
    absl::MutexLock lock(&mu_);
    if (hold_) return;
    if (const auto it = arriving_.find(index); it != arriving_.end()) {
      if (it->second == nullptr) return;  // not a layer decoded so
      tiled = it->second;
    } else if (!queue_.empty() || !tiled_.empty()) {
      // The decoder is behind the link: the layer waits its turn (asked
      // again with its next bytes, else queued by Submit).
      return;
    }
  }
  if (!tiled) {
    absl::StatusOr<std::shared_ptr<TiledLayer>> started =
        StartArriving(index, bytes, expected);
    if (absl::IsUnavailable(started.status())) return;  // no header yet
    // A layer that cannot start so is checked whole by Submit, which reports
    // what is wrong with it.
    if (started.ok()) tiled = *std::move(started);
    absl::MutexLock lock(&mu_);
    arriving_[index] = tiled;
    if (!tiled) return;
    tiled->arriving = true;
    tiled_.push_back(tiled);
    ++running_;
  }
  Receive(*tiled, bytes);
}

absl::StatusOr<std::shared_ptr<DecodePool::TiledLayer>>
DecodePool::StartArriving(size_t index, absl::string_view bytes,
                          const v1::ManifestLayer& expected) {
  ASSIGN_OR_RETURN(
      PackedLayerHead head,
      ParsePackedLayerHead(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()),
                              bytes.size()),
          expected.bytes()));
  if (head.layer.name != expected.name() ||
      head.offsets.end != expected.bytes() || !DecodesByTile(head.layer)) {
    return nullptr;
  }
  auto tiled = std::make_shared<TiledLayer>();
  RETURN_IF_ERROR(BeginDecode(index, head.layer, tiled.get()));
  tiled->job.index = index;
  tiled->layer = std::move(head.layer);
  tiled->offsets = std::move(head.offsets);
  return tiled;
}

void DecodePool::Receive(TiledLayer& tiled, absl::string_view bytes) {
  if (bytes.size() < tiled.seen || bytes.size() > tiled.offsets.end)
    tiled.diverged = true;
  if (tiled.diverged) return;
  const auto span = absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  tiled.hasher.Update(span.subspan(tiled.seen));
  tiled.seen = bytes.size();
  const TileOffsets& offsets = tiled.offsets;
  size_t copied = tiled.copied;
  // Bounded by the layer's tile count.
  while (copied < offsets.starts.size()) {
    const uint64_t end = offsets.TileEnd(copied);
    if (end > bytes.size()) break;
    // Tiles from `copied` on are not handed out yet: no worker reads them.
    tiled.layer.tiles[copied].assign(span.begin() + offsets.starts[copied],
                                     span.begin() + end);
    ++copied;
  }
  if (copied == tiled.copied) return;
  tiled.copied = copied;
  absl::MutexLock lock(&mu_);
  tiled.tiles_in = std::max(tiled.tiles_in, copied);
}

void DecodePool::AbandonArriving() {
  for (auto& [index, tiled] : arriving_) {
    if (tiled == nullptr) continue;
    tiled_.erase(std::remove(tiled_.begin(), tiled_.end(), tiled),
                 tiled_.end());
    --running_;  // its tiles in flight finish; it never completes
  }
  arriving_.clear();
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
  AbandonArriving();  // every layer is submitted by now, or will not be
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
  RETURN_IF_ERROR(CheckReceived(Sha256(span), job.expected));
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
    if (sink_ && !written) {
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

absl::Status DecodePool::BeginDecode(size_t index, const PackedLayer& layer,
                                     TiledLayer* tiled) {
  RETURN_IF_ERROR(CheckTiledLayer(layer));  // before anything is sized by it
  std::unique_ptr<RowsWriter> writer;       // null: the whole layer's values
  if (rows_sink_) {
    ASSIGN_OR_RETURN(writer, rows_sink_(index, layer));
  }
  if (writer) {
    tiled->decode.emplace<BandDecode>().writer = std::move(writer);
  } else {
    tiled->decode = WholeDecode{std::vector<int8_t>(
        static_cast<size_t>(layer.grid.rows * layer.grid.cols))};
  }
  return absl::OkStatus();
}

void DecodePool::StartTiled(Job job, PackedLayer layer) {
  auto tiled = std::make_shared<TiledLayer>();
  if (const absl::Status started = BeginDecode(job.index, layer, tiled.get());
      !started.ok()) {
    Complete(job, &layer, started);
    return;
  }
  tiled->job = std::move(job);
  tiled->layer = std::move(layer);
  size_t tile;
  {
    absl::MutexLock lock(&mu_);
    tiled->tiles_in = tiled->layer.tiles.size();
    tiled_.push_back(tiled);
    tile = HandOut(*tiled);  // tile 0 is this worker's
  }
  RunTile(tiled, tile);
}

void DecodePool::RunTile(const std::shared_ptr<TiledLayer>& tiled,
                         size_t tile) {
  if (auto* bands = std::get_if<BandDecode>(&tiled->decode)) {
    RunBandTile(tiled, *bands, tile);
  } else {
    RunWholeTile(tiled, std::get<WholeDecode>(tiled->decode), tile);
  }
}

void DecodePool::RunWholeTile(const std::shared_ptr<TiledLayer>& tiled,
                              WholeDecode& whole, size_t tile) {
  bool failed;
  {
    absl::MutexLock lock(&mu_);
    failed = !tiled->status.ok();  // then the tile is not decoded
  }
  const absl::Status status =
      failed
          ? absl::OkStatus()
          : DecodeLayerTile(tiled->layer, tile, absl::MakeSpan(whole.values));
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && tiled->status.ok()) tiled->status = status;
    if (++whole.tiles_done < tiled->layer.tiles.size()) return;
  }
  TilesDone(tiled);  // the last tile: every other tile's job is done with it
}

void DecodePool::TilesDone(const std::shared_ptr<TiledLayer>& tiled) {
  {
    absl::MutexLock lock(&mu_);
    if (tiled->arriving) {
      tiled->decoded = true;  // Submit finishes it (or it is abandoned)
      return;
    }
  }
  FinishTiled(tiled);
}

void DecodePool::FinishTiled(const std::shared_ptr<TiledLayer>& tiled) {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = OwnCopy(tiled->status);
  }
  const PackedLayer& layer = tiled->layer;
  if (auto* bands = std::get_if<BandDecode>(&tiled->decode)) {
    if (status.ok()) status = CheckDecodedDigest(layer, bands->hasher.Finish());
    if (status.ok()) status = bands->writer->Finish();
    Complete(tiled->job, &layer,
             status.ok() ? absl::StatusOr<RebuiltTensor>(RebuiltTensor{})
                         : absl::StatusOr<RebuiltTensor>(status),
             /*written=*/true);
    return;
  }
  auto& whole = std::get<WholeDecode>(tiled->decode);
  Complete(tiled->job, &layer,
           status.ok() ? FinishTiledDecode(layer, std::move(whole.values))
                       : absl::StatusOr<RebuiltTensor>(status));
}

void DecodePool::RunBandTile(const std::shared_ptr<TiledLayer>& tiled,
                             BandDecode& bands, size_t tile) {
  const PackedLayer& layer = tiled->layer;
  const int64_t band_index = TileBand(layer, tile);
  std::vector<int8_t>* values;
  bool failed;
  {
    absl::MutexLock lock(&mu_);
    values = &bands.bands.at(band_index).values;  // a map's node: stable
    failed = !tiled->status.ok();  // then the tile is not decoded
  }
  const absl::Status status =
      failed ? absl::OkStatus()
             : DecodeLayerTile(layer, tile, absl::MakeSpan(*values),
                               BandRows(layer, band_index).first);
  mu_.Lock();
  if (!status.ok() && tiled->status.ok()) tiled->status = status;
  --bands.bands.at(band_index).tiles_left;
  // Complete bands are written in order from the next one on, by one worker
  // at a time (the others leave theirs to it).
  if (bands.writing) {
    mu_.Unlock();
    return;
  }
  bands.writing = true;
  // Bounded: one round per band of the layer.
  while (true) {
    const auto next = bands.bands.find(bands.next_band);
    if (next == bands.bands.end() || next->second.tiles_left > 0) break;
    std::vector<int8_t> band = std::move(next->second.values);
    bands.bands.erase(next);
    const int64_t row0 = BandRows(layer, bands.next_band).first;
    const bool failed = !tiled->status.ok();
    mu_.Unlock();
    absl::Status written;
    if (!failed) {
      bands.hasher.Update(AsBytes(absl::Span<const int8_t>(band)));
      written = bands.writer->Rows(row0, absl::MakeSpan(band));
    }
    band = {};  // freed before the next band
    mu_.Lock();
    if (!written.ok() && tiled->status.ok()) tiled->status = written;
    ++bands.next_band;
  }
  bands.writing = false;
  const bool last = bands.next_band == BandCount(layer);
  mu_.Unlock();
  if (last) TilesDone(tiled);  // this worker wrote the last band
}

bool DecodePool::TileReady(const TiledLayer& tiled) const {
  if (tiled.next_tile >= tiled.tiles_in) return false;  // still arriving
  const auto* bands = std::get_if<BandDecode>(&tiled.decode);
  if (bands == nullptr) return true;
  const int64_t band = TileBand(tiled.layer, tiled.next_tile);
  return band < bands->next_band + threads_ || bands->bands.count(band) > 0;
}

DecodePool::TiledQueue::iterator DecodePool::ReadyTiled() {
  return std::find_if(
      tiled_.begin(), tiled_.end(),
      [this](const std::shared_ptr<TiledLayer>& tiled)
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return TileReady(*tiled); });
}

size_t DecodePool::HandOut(TiledLayer& tiled) {
  const size_t tile = tiled.next_tile++;
  if (auto* bands = std::get_if<BandDecode>(&tiled.decode)) {
    const int64_t band = TileBand(tiled.layer, tile);
    if (bands->bands.count(band) == 0) {
      Band& started = bands->bands[band];
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
            return p->ReadyTiled() != p->tiled_.end() ||
                   (!p->queue_.empty() && (!p->hold_ || p->stopping_)) ||
                   (p->stopping_ && p->tiled_.empty() && p->queue_.empty());
          },
          this));
      if (const auto ready = ReadyTiled(); ready != tiled_.end()) {
        tiled = *ready;
        tile = HandOut(*tiled);
        if (tiled->next_tile == tiled->layer.tiles.size()) tiled_.erase(ready);
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
      RunTile(tiled, tile);
      continue;
    }
    absl::StatusOr<PackedLayer> layer = Parse(job);
    if (!layer.ok()) {
      Complete(job, nullptr, layer.status());
    } else if (tile_jobs_ && DecodesByTile(*layer)) {
      StartTiled(std::move(job), *std::move(layer));
    } else {
      Complete(job, &*layer, DecodeWhole(*layer));
    }
  }
}

}  // namespace weightcast
