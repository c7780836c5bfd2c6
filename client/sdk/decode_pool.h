// Decodes and verifies the packed layers of a pull on worker threads while the
// stream goes on: SHA-256 against the manifest, parse, decode (delta layers
// against their base in a BaseStore). A multi-tile HEVC layer becomes one job
// per tile (layer_tiles.h), so one large layer uses every worker; workers take
// tiles of started layers before starting another layer, so at most about one
// layer per worker is decoded at a time. Internal to client/sdk.
// Thread-safe: Submit from the pulling thread while workers decode; Take a
// layer's result only after Wait.
#ifndef WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_
#define WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "client/sdk/base_store.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

class DecodePool {
 public:
  // Takes each verified layer (a base entry submitted for decoding too: the
  // sink decides where it goes) on the worker that decoded it, instead of the
  // pool keeping it; its error becomes the layer's.
  using Sink = std::function<absl::Status(size_t index, RebuiltTensor tensor)>;

  // Takes a multi-tile layer a band of rows at a time (layer_tiles.h), in row
  // order, so that no worker holds the whole layer's int8 values: Rows for
  // each band, then Finish once the bands' SHA-256 matched the layer's (a
  // layer that fails it is not finished: its rows are taken again when it is
  // fetched again). Called by one worker at a time; errors become the
  // layer's.
  class RowsWriter {
   public:
    virtual ~RowsWriter() = default;
    // Rows [row0, row0 + values.size() / columns) of the layer's matrix,
    // which the writer may change (an int8 output saturates the outliers).
    virtual absl::Status Rows(int64_t row0, absl::Span<int8_t> values) = 0;
    virtual absl::Status Finish() = 0;
  };
  // The writer for layer `index`, or null to take it whole (Sink).
  using RowsSink = std::function<absl::StatusOr<std::unique_ptr<RowsWriter>>(
      size_t index, const PackedLayer& layer)>;

  // `threads` <= 0: one per core. `layers`: the manifest's layer count.
  // `hold`: queue layers without decoding them until Wait() (download, then
  // decode). Delta layers decode against `bases` (must outlive the pool),
  // where HEVC layers are kept for later deltas too. With a `sink`, Take
  // returns an empty tensor for a layer the sink took.
  // `tile_jobs` false: one job per layer, decoded by one worker (the
  // baseline bench/server_benchmark compares with). With `rows_sink` (and
  // tile jobs), a multi-tile layer is decoded a band at a time, at most
  // `threads` bands of a layer held at once.
  DecodePool(int threads, size_t layers, bool hold, BaseStore* bases,
             Sink sink = nullptr, bool tile_jobs = true,
             RowsSink rows_sink = nullptr);
  ~DecodePool();  // decodes what is queued, then joins the workers

  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Queues layer `index` (its packed bytes and its manifest entry); completes
  // one that Arriving started, once its bytes match the manifest's SHA-256.
  void Submit(size_t index, std::string bytes, v1::ManifestLayer expected);
  // Layer `index` is arriving: `bytes` holds its first bytes so far (each call
  // a longer prefix of the bytes then submitted; called by the thread that
  // calls Submit). Once its header is in, a layer of several tiles has its
  // tiles decoded as their bytes arrive, so that a pull ends about a tile's
  // decode after its last byte, not a layer's. A layer starts so only while
  // the decoder has nothing else to hand out (no queued layer, no tile of a
  // started one waiting): behind a link faster than the decoder no layer
  // starts early and layers wait in the queue WaitForRoom bounds, so decoding
  // as layers arrive holds at most one layer more than decoding them whole.
  // Nothing of it is finished or handed on before Submit checked its SHA-256
  // (rows written by then are rewritten when a layer that failed is fetched
  // again, as after any failed decode). A pool that holds layers, or decodes
  // one job per layer, waits for Submit.
  void Arriving(size_t index, absl::string_view bytes,
                const v1::ManifestLayer& expected);
  // Received layers waiting for a worker, at most, past WaitForRoom.
  static constexpr uint64_t kMaxQueuedBytes = 64 << 20;
  // Blocks while more than kMaxQueuedBytes of submitted layers wait for a
  // worker (not while holding: download-then-decode keeps everything by
  // design), so that a fast link cannot queue a whole tier in memory ahead of
  // the decoder: the caller reads no further and gRPC's flow control slows
  // the server.
  void WaitForRoom();
  int backlog();  // layers submitted and not yet decoded
  int decoded();  // layers decoded so far (each decode counts, refetches too)

  // Releases a hold and waits until every submitted layer is decoded.
  void Wait();
  // Moves out the result of layer `index` (DATA_LOSS naming the layer when it
  // failed); call after Wait(), once per decode of the layer.
  absl::StatusOr<RebuiltTensor> Take(size_t index);
  // The status of layer `index`'s result, after Wait().
  absl::Status Check(size_t index);
  // Puts back a result taken with Take (to be taken again later).
  void Restore(size_t index, RebuiltTensor tensor);

 private:
  struct Job {
    size_t index;
    std::string bytes;
    v1::ManifestLayer expected;
  };
  // A layer whose tiles are decoded as separate jobs, into its whole int8
  // values (WholeDecode) or band by band into a RowsWriter (BandDecode);
  // defined in decode_pool.cc.
  struct TiledLayer;
  struct WholeDecode;
  struct BandDecode;
  using TiledQueue = std::deque<std::shared_ptr<TiledLayer>>;

  // Checks the bytes against the manifest and parses them.
  absl::StatusOr<PackedLayer> Parse(const Job& job);
  // A tiled layer's decode: band by band into the rows sink's writer, or into
  // its whole values when there is no rows sink or it declines the layer.
  absl::Status BeginDecode(size_t index, const PackedLayer& layer,
                           TiledLayer* tiled);
  // An arriving layer's decode, once its header is in (UNAVAILABLE before);
  // null for a layer not decoded as it arrives.
  absl::StatusOr<std::shared_ptr<TiledLayer>> StartArriving(
      size_t index, absl::string_view bytes, const v1::ManifestLayer& expected);
  // Hashes the bytes of an arriving layer not seen yet and makes the tiles now
  // whole available to the workers.
  void Receive(TiledLayer& tiled, absl::string_view bytes);
  // Stops the arriving layers that were never submitted: no more of their
  // tiles are handed out, and they never complete.
  void AbandonArriving() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Decodes a parsed layer on this thread.
  absl::StatusOr<RebuiltTensor> DecodeWhole(const PackedLayer& layer);
  // A layer's last step, on the worker that finished it: keeps it as a base,
  // hands it to the sink, records its result.
  // `written`: the layer went to a RowsWriter (not to the sink).
  void Complete(const Job& job, const PackedLayer* layer,
                absl::StatusOr<RebuiltTensor> result, bool written = false);
  // Starts a parsed layer of several tiles: its first tile is the calling
  // worker's, the others go to tiled_.
  void StartTiled(Job job, PackedLayer layer);
  void RunTile(const std::shared_ptr<TiledLayer>& tiled, size_t tile);
  // After a tiled layer's last tile (and band): finishes it, unless its bytes
  // are still arriving (then Submit does).
  void TilesDone(const std::shared_ptr<TiledLayer>& tiled);
  // Checks and completes a tiled layer whose tiles are all decoded.
  void FinishTiled(const std::shared_ptr<TiledLayer>& tiled);
  void RunWholeTile(const std::shared_ptr<TiledLayer>& tiled,
                    WholeDecode& whole, size_t tile);
  // A tile of a layer decoded band by band: the tile into its band, then the
  // bands complete in order written and hashed, and the layer finished after
  // its last band.
  void RunBandTile(const std::shared_ptr<TiledLayer>& tiled, BandDecode& bands,
                   size_t tile);
  // Whether a worker may take the next tile of `tiled`: band by band, only
  // within `threads` bands of the next one to write.
  bool TileReady(const TiledLayer& tiled) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first layer of tiled_ with a tile ready, or tiled_.end().
  TiledQueue::iterator ReadyTiled() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next tile of `tiled` for the calling worker (its band started when it
  // is the band's first).
  size_t HandOut(TiledLayer& tiled) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Work();

  // Constant after construction.
  BaseStore* const bases_;
  const Sink sink_;
  const bool tile_jobs_;
  const RowsSink rows_sink_;
  const int threads_;
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // of the jobs in queue_
  // Started layers with tiles not yet handed out (taken first, the first
  // with a tile ready).
  TiledQueue tiled_ ABSL_GUARDED_BY(mu_);
  // Layers arriving (Arriving) and not yet submitted; null for one that is
  // not decoded as it arrives.
  absl::flat_hash_map<size_t, std::shared_ptr<TiledLayer>> arriving_
      ABSL_GUARDED_BY(mu_);
  std::vector<absl::StatusOr<RebuiltTensor>> results_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // layers taken, not completed
  int decoded_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // joined by the destructor
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_
