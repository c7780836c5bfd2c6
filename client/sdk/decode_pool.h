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
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/sdk/base_store.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

class DecodePool {
 public:
  // Takes each verified model layer (not base entries) on the worker that
  // decoded it, instead of the pool keeping it; its error becomes the layer's.
  using Sink = std::function<absl::Status(size_t index, RebuiltTensor tensor)>;

  // `threads` <= 0: one per core. `layers`: the manifest's layer count.
  // `hold`: queue layers without decoding them until Wait() (download, then
  // decode). Delta layers decode against `bases` (must outlive the pool),
  // where HEVC layers are kept for later deltas too. With a `sink`, Take
  // returns an empty tensor for a layer the sink took.
  // `tile_jobs` false: one job per layer, decoded by one worker (the
  // baseline bench/server_benchmark compares with).
  DecodePool(int threads, size_t layers, bool hold, BaseStore* bases,
             Sink sink = nullptr, bool tile_jobs = true);
  ~DecodePool();  // decodes what is queued, then joins the workers

  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Queues layer `index` (its packed bytes and its manifest entry).
  void Submit(size_t index, std::string bytes, v1::ManifestLayer expected);
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
  // A layer whose tiles are decoded as separate jobs.
  struct TiledLayer {
    Job job;
    PackedLayer layer;
    std::vector<int8_t> values;  // each tile's job writes its own rectangle
    size_t next_tile = 0;        // guarded by the pool's mu_
    size_t tiles_done = 0;       // guarded by the pool's mu_
    absl::Status status;         // guarded by the pool's mu_: the first error
  };

  // Checks the bytes against the manifest and parses them.
  absl::StatusOr<PackedLayer> Parse(const Job& job);
  // Decodes a parsed layer on this thread.
  absl::StatusOr<RebuiltTensor> DecodeWhole(const PackedLayer& layer);
  // A layer's last step, on the worker that finished it: keeps it as a base,
  // hands it to the sink, records its result.
  void Complete(const Job& job, const PackedLayer* layer,
                absl::StatusOr<RebuiltTensor> result);
  void RunTile(const std::shared_ptr<TiledLayer>& tiled, size_t tile);
  void Work();

  // Constant after construction.
  BaseStore* const bases_;
  const Sink sink_;
  const bool tile_jobs_;
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // of the jobs in queue_
  // Started layers with tiles not yet handed out (taken first).
  std::deque<std::shared_ptr<TiledLayer>> tiled_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::StatusOr<RebuiltTensor>> results_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // layers taken, not completed
  int decoded_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // joined by the destructor
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_
