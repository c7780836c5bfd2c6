// The registry: model versions, their tensors, tiers and encoded layers, in
// SQLite (WAL) in the data directory. Schema migrations run on Open; a tier
// left ENCODING by a crash is reset to NOT_ENCODED. Thread-safe: one mutex
// serializes every statement.
#ifndef WEIGHTCAST_SERVER_STORAGE_REGISTRY_H_
#define WEIGHTCAST_SERVER_STORAGE_REGISTRY_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/pack/layer_codec_id.h"
#include "common/tensor/accuracy.h"
#include "server/storage/database.h"

namespace weightcast {

struct TensorRecord {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;
  std::string layer_class;
};

struct VersionRecord {
  int64_t id = 0;
  std::string model;
  std::string version;
  std::string description;
  std::string source_sha256;
  uint64_t source_bytes = 0;
  std::string ladder;       // "lossless,q22,..."
  std::string policy_json;  // empty = default policy
  int64_t created_unix_seconds = 0;
  std::vector<TensorRecord> tensors;
  // The evaluation bundle's blobs (hex; both empty without one) and the
  // accuracy of the checkpoint as registered.
  std::string eval_module_sha256;
  std::string eval_data_sha256;
  std::optional<Accuracy> reference_accuracy;
  // The version of the same model its tiers are coded against (deltas), or
  // empty.
  std::string base_version;

  bool has_eval_bundle() const { return !eval_module_sha256.empty(); }
};

enum class TierState { kNotEncoded, kEncoding, kReady, kFailed };

struct LayerRecord {
  std::string name;
  std::string blob_sha256;  // hex; the packed layer's bytes
  uint64_t bytes = 0;
  LayerCodec codec = LayerCodec::kHevc;  // stored as a frozen number
  std::string decoded_sha256;            // 32 raw bytes
  double bits_per_weight = 0;
  double sqnr_db = 0;
  bool picture = false;  // coded with the tier's picture codec
  int qp = 0;            // HEVC layers: the QP coded at
  // hevc-delta layers: the blob (hex) of the base version's layer its P
  // pictures predict from.
  std::string base_blob_sha256;
  // int8 layers: the quantization scheme's name ("per-tensor-symmetric",
  // "per-channel-symmetric", common/tensor/quantize.h), then "+outliers" for
  // the outlier front end, "+cols" for column scales and "+mosaic" for a
  // mosaic picture; empty for float and
  // passthrough layers.
  std::string quant_scheme;
  // Manifests only: this entry is that base layer, sent ahead of its delta
  // layer to a client that does not hold it (it is not a tensor of the
  // version).
  bool is_base = false;
  // Manifests only: the position in the version's tensor order of this layer
  // (of a base entry: of the layer it is the base of). Refinement manifests
  // send layers out of that order.
  uint32_t tensor_index = 0;
};

struct TierRecord {
  std::string tier;
  TierState state = TierState::kNotEncoded;
  std::string error;
  std::vector<LayerRecord> layers;  // READY only, in tensor order
  std::optional<Accuracy>
      accuracy;  // measured on the evaluation bundle; kept when evicted
};

struct CachedTier {
  int64_t version_id = 0;
  std::string tier;
  std::string ladder;  // the version's ladder
  int64_t last_used = 0;
  uint64_t bytes = 0;
};

class Registry {
 public:
  static absl::StatusOr<std::unique_ptr<Registry>> Open(
      const std::string& path);

  // ALREADY_EXISTS if (model, version) is taken. Tiers of `ladder` start
  // NOT_ENCODED.
  absl::StatusOr<int64_t> AddVersion(const VersionRecord& version,
                                     const std::vector<std::string>& tiers);
  // `version` may be "latest" (the newest registration of the model). NOT_FOUND
  // otherwise.
  absl::StatusOr<VersionRecord> GetVersion(const std::string& model,
                                           const std::string& version);
  absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
  ListModels();
  // Returns the blobs that no remaining row references, for the caller to
  // remove.
  absl::StatusOr<std::vector<std::string>> DeleteVersion(int64_t version_id);

  absl::StatusOr<std::vector<TierRecord>> GetTiers(int64_t version_id);
  absl::StatusOr<TierRecord> GetTier(int64_t version_id,
                                     const std::string& tier);
  // Adds a NOT_ENCODED tier to a version (refinement tiers are added on first
  // request); a tier already there is left as it is.
  absl::Status AddTier(int64_t version_id, const std::string& tier);
  absl::Status SetTierState(int64_t version_id, const std::string& tier,
                            TierState state, const std::string& error);
  // Records the layers and marks the tier READY, in one transaction.
  absl::Status CompleteTier(int64_t version_id, const std::string& tier,
                            const std::vector<LayerRecord>& layers);
  absl::Status SetTierAccuracy(int64_t version_id, const std::string& tier,
                               const Accuracy& accuracy);
  // READY tiers of versions with an evaluation bundle whose accuracy is not
  // measured yet, as (model, version, tier).
  absl::StatusOr<std::vector<std::array<std::string, 3>>>
  TiersAwaitingAccuracy();

  absl::StatusOr<std::string> GetSetting(const std::string& key,
                                         const std::string& fallback);
  absl::Status SetSetting(const std::string& key, const std::string& value);

  // Records a use of a tier (for least-recently-used eviction).
  absl::Status TouchTier(int64_t version_id, const std::string& tier,
                         int64_t now);
  // READY tiers, least recently used first.
  absl::StatusOr<std::vector<CachedTier>> ReadyTiersByLastUse();
  // Drops a tier's layers and marks it NOT_ENCODED, in one transaction; returns
  // the blobs no remaining row references, for the caller to remove.
  absl::StatusOr<std::vector<std::string>> EvictTier(int64_t version_id,
                                                     const std::string& tier);

  // Sum of the bytes of every encoded layer.
  absl::StatusOr<uint64_t> EncodedBytes();

  // Those of `candidates` (blob names) that no row references, without repeats.
  absl::StatusOr<std::vector<std::string>> Unreferenced(
      const std::vector<std::string>& candidates);

  // Every blob a row references (sources and layers), for integrity checks.
  absl::StatusOr<std::vector<std::string>> ReferencedBlobs();

  // Leases on encoding a tier, for replicas sharing the registry: true when
  // `holder` now holds (version, tier)'s lease until `expires_ms` (it was
  // free, expired at `now_ms`, or already `holder`'s); false while another
  // holder's lease is live. Times are unix milliseconds.
  absl::StatusOr<bool> AcquireTierLease(int64_t version_id,
                                        const std::string& tier,
                                        const std::string& holder,
                                        int64_t now_ms, int64_t expires_ms);
  // Every lease of `holder` now lasts until `expires_ms`.
  absl::Status RenewTierLeases(const std::string& holder, int64_t expires_ms);
  absl::Status ReleaseTierLease(int64_t version_id, const std::string& tier,
                                const std::string& holder);

  // OK while the database answers (PostgreSQL: reconnecting if it must);
  // UNAVAILABLE naming the registry otherwise.
  absl::Status Ping();
  // Whether this registry is in PostgreSQL (shared by replicas).
  bool shared() const { return shared_; }

 private:
  explicit Registry(std::unique_ptr<Database> db)
      : shared_(db->is_postgres()), db_(std::move(db)) {}
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<LayerRecord>> LayersLocked(int64_t version_id,
                                                        const std::string& tier)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> ReferencedBlobsLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> UnreferencedLocked(
      const std::vector<std::string>& candidates)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool shared_;
  absl::Mutex mu_;
  const std::unique_ptr<Database> db_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_REGISTRY_H_
