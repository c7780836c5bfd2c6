// The server's core, no gRPC in it: registers model versions (checkpoint validated, stored as a
// blob, tensors and tiers recorded), encodes tiers on the encoder pool (each (version, tier)
// once however many requests wait for it), and answers manifests of encoded tiers whose layers
// are blobs. Thread-safe.
#ifndef WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_
#define WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/encoder_pool.h"
#include "server/metrics/metrics.h"
#include "server/storage/blob_store.h"
#include "server/storage/registry.h"

namespace weightcast {

struct ModelStoreOptions {
  std::string data_dir;
  int workers = 0;  // 0: one per core
  std::string default_ladder = "lossless,q22,q27,q32,q37";
  std::string x265_preset = "veryfast";
  ServerMetrics* metrics = nullptr;  // optional; must outlive the store
  // Budget for encoded tiers (0: unlimited). Over it, the least recently used READY tiers are
  // evicted, except each version's first ladder tier (pinned) and tiers being streamed; an
  // evicted tier is encoded again when next requested.
  uint64_t cache_bytes = 0;
};

struct RegisterRequest {
  std::string model;
  std::string version;
  std::string description;
  std::string ladder;       // empty: the default ladder
  std::string policy_json;  // empty: the default policy
};

struct Manifest {
  VersionRecord version;
  std::string tier;
  std::vector<LayerRecord> layers;
  uint64_t total_bytes = 0;
  std::shared_ptr<void> lease;  // while held, the tier is not evicted
};

class ModelStore {
 public:
  static absl::StatusOr<std::unique_ptr<ModelStore>> Create(const ModelStoreOptions& options);
  ~ModelStore();  // Shutdown()

  // Stops encoding: jobs not started are dropped, running ones finish, and every request still
  // waiting for an encoding gets UNAVAILABLE. Unfinished tiers are NOT_ENCODED again.
  void Shutdown();

  // Registers the checkpoint at `upload_path` (moved into the blob store on success).
  // INVALID_ARGUMENT naming the tensor for a bad checkpoint; ALREADY_EXISTS for a taken label.
  absl::StatusOr<VersionRecord> Register(const RegisterRequest& request, const std::string& upload_path);
  absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>> List();
  absl::StatusOr<std::pair<VersionRecord, std::vector<TierRecord>>> Describe(const std::string& model,
                                                                              const std::string& version);
  absl::Status Delete(const std::string& model, const std::string& version);
  // Starts encoding `tiers` (empty: the whole ladder) in the background.
  absl::Status Warm(const std::string& model, const std::string& version, const std::vector<std::string>& tiers);
  absl::Status SetDefaultLadder(const std::string& ladder);
  absl::StatusOr<std::string> DefaultLadder();

  // The manifest of an encoded tier; encodes it first (and waits) if needed. `tier` empty: the
  // version's first tier.
  absl::StatusOr<Manifest> GetManifest(const std::string& model, const std::string& version, const std::string& tier);

  const BlobStore& blobs() const { return *blobs_; }
  const EncoderPool& pool() const { return *pool_; }
  // Bytes of all encoded tiers' layers.
  absl::StatusOr<uint64_t> EncodedBytes() { return registry_->EncodedBytes(); }
  // Layers encoded since start (each layer of each (version, tier) encoding once).
  int64_t layers_encoded() const { return layers_encoded_.load(); }

 private:
  struct Encoding;
  ModelStore(ModelStoreOptions options, std::unique_ptr<Registry> registry, std::unique_ptr<BlobStore> blobs);
  // Starts (or joins) the encoding of (version, tier); `waiting` makes it urgent.
  std::shared_ptr<Encoding> StartEncoding(const VersionRecord& version, const std::string& tier, bool waiting);
  void Prepare(std::shared_ptr<Encoding> encoding);
  void Finish(const std::shared_ptr<Encoding>& encoding);
  void Fail(const std::shared_ptr<Encoding>& encoding, absl::Status status);
  // Evicts least recently used tiers until the encoded bytes fit options_.cache_bytes; never
  // `keep` (a tier just encoded, which its waiters are about to read).
  void EnforceCacheBudget(const std::pair<int64_t, std::string>& keep = {0, ""});

  const ModelStoreOptions options_;
  const std::unique_ptr<Registry> registry_;
  const std::unique_ptr<BlobStore> blobs_;
  std::atomic<int64_t> layers_encoded_{0};  // a counter for tests and metrics
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<int64_t, std::string>, std::shared_ptr<Encoding>> encodings_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Streams per tier. Shared with the leases, which may outlive the store.
  struct LeaseTable {
    absl::Mutex mu;
    absl::flat_hash_map<std::pair<int64_t, std::string>, int> counts ABSL_GUARDED_BY(mu);
  };
  const std::shared_ptr<LeaseTable> leases_ = std::make_shared<LeaseTable>();
  absl::Mutex evict_mu_;  // one eviction pass at a time
  const std::unique_ptr<EncoderPool> pool_;  // last: its workers use everything above
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_
