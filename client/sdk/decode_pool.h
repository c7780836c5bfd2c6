// Decodes and verifies the packed layers of a pull on worker threads while the
// stream goes on: SHA-256 against the manifest, parse, decode (delta layers
// against their base in a BaseStore). Internal to client/sdk.
// Thread-safe: Submit from the pulling thread while workers decode; Take a
// layer's result only after Wait.
#ifndef WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_
#define WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/sdk/base_store.h"
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
  DecodePool(int threads, size_t layers, bool hold, BaseStore* bases,
             Sink sink = nullptr);
  ~DecodePool();  // decodes what is queued, then joins the workers

  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  // Queues layer `index` (its packed bytes and its manifest entry).
  void Submit(size_t index, std::string bytes, v1::ManifestLayer expected);
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

  absl::StatusOr<RebuiltTensor> Decode(const Job& job);
  void Work();

  // Constant after construction.
  BaseStore* const bases_;
  const Sink sink_;
  absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::StatusOr<RebuiltTensor>> results_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int decoded_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // joined by the destructor
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_DECODE_POOL_H_
