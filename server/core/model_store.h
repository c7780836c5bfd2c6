// The server's core, no gRPC in it: registers model versions (checkpoint
// validated, stored as a blob, tensors and tiers recorded), encodes tiers on
// the encoder pool (each (version, tier) once however many requests wait for
// it; budget tiers measure each picture layer's rate curve first and give every
// layer its own QP), measures each encoded tier's accuracy when the version has
// an evaluation bundle, and answers manifests of encoded tiers whose layers are
// blobs. A version registered with a base version (the same architecture) codes
// each picture layer of its lossy HEVC tiers as a delta on the base's layer at
// that tier (common/pack/delta_codec) when that is smaller: such a tier has one
// definition, and a client that does not hold the base layer gets it ahead of
// the delta in the manifest. A refinement tier "q37+q22" codes them as P
// pictures at QP 22 on the version's own q37 layers: progressive delivery. An
// accuracy tier "acc-0.5" (a version with an evaluation bundle) is the smallest
// budget allocation whose measured top-1 is within 0.5 point of the float
// model's, found by a bounded search (model_store_accuracy.cc); a cosine tier
// "cos-0.99" the same by the outputs' mean cosine with the float model's (a
// bundle with or without labels).
// Thread-safe. model_store.cc: registration, queries, cache;
// model_store_encoding.cc: encoding and evaluation; model_store_accuracy.cc:
// the accuracy tiers' search.
#ifndef WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_
#define WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"
#include "common/checkpoint/checkpoint_source.h"
#include "common/eval/evaluator.h"
#include "common/pack/layer_policy.h"
#include "common/pack/rate_allocation.h"
#include "common/pack/tier.h"
#include "common/tensor/tensor.h"
#include "server/core/accuracy_search.h"
#include "server/core/encoder_pool.h"
#include "server/core/layer_encoder.h"
#include "server/core/lru_cache.h"
#include "server/core/tier_leases.h"
#include "server/metrics/metrics.h"
#include "server/storage/blob_store.h"
#include "server/storage/registry.h"

namespace weightcast {

// The float models' outputs kept for tier measurements: 64 MiB (Fashion-MNIST's
// 10,000 x 10 logits take 0.4 MB).
inline constexpr uint64_t kReferenceCacheBytes = uint64_t{64} << 20;
// The layers accuracy searches decoded, kept for the version's next candidates
// and searches: 256 MiB (a search of a 1.4 M-weight picture layer decodes it
// at up to ~30 QPs, plain and weighed, 5.5 MB each).
inline constexpr uint64_t kDecodedLayerCacheBytes = uint64_t{256} << 20;

struct ModelStoreOptions {
  std::string data_dir;
  // Where the registry lives: empty for SQLite in data_dir/registry.db, or a
  // postgresql:// URL (several replicas may share it; see docs/OPERATIONS.md).
  std::string registry;
  // Shared registry: how long a replica's lease on encoding a tier outlives
  // its last renewal (a replica that died mid-encode is taken over after it).
  absl::Duration encode_lease = absl::Seconds(30);
  int workers = 0;  // 0: one per core
  std::string default_ladder = "lossless,q22,q27,q32,q37";
  std::string x265_preset = "veryfast";
  // The QPs a budget or accuracy tier codes each picture layer at to measure
  // its rate curve, coarsest first (ParseRateQps): fewer register faster and
  // fit a budget less closely. (An accuracy tier's search is bounded by its
  // evaluations and by the measure's noise; fewer points have found a smaller
  // acc-X tier than the default grid: docs/EVALUATION.md.)
  std::vector<int> rate_qps = BudgetQpGrid();
  ServerMetrics* metrics = nullptr;  // optional; must outlive the store
  // Budget for encoded tiers (0: unlimited). Over it, the least recently used
  // READY tiers are evicted, except each version's first ladder tier (pinned)
  // and tiers being streamed; an evicted tier is encoded again when next
  // requested.
  uint64_t cache_bytes = 0;
  // A tier whose manifest was handed out (by any replica sharing the registry:
  // the last-use time is the registry's) less than this long ago is not
  // evicted, even over the budget. A replica sees only its own streams; with a
  // shared registry this keeps a budget from removing the blobs of a tier
  // another replica is sending (weightcastd: 600 s with --registry).
  absl::Duration evict_min_idle = absl::ZeroDuration();
  // Checkpoints with more tensors, or a tensor of more dimensions, are refused
  // (INVALID_ARGUMENT).
  size_t max_tensors = 1 << 16;  // the packed model format's limit
  size_t max_tensor_rank = 8;
  // Most tiers one version may have, ladder and added refinements together
  // (each is an encoding stored on disk); a longer ladder is INVALID_ARGUMENT,
  // one refinement more RESOURCE_EXHAUSTED.
  size_t max_tiers = 32;
  // What codes each layer (null: X265LayerEncoder()) and what stamps the tiers'
  // last use and the versions' registration (null: SystemClock()). Optional;
  // each must outlive the store.
  // Accuracy tiers also search with the layers worth weighing coded with
  // column scales from their inputs' RMS, and keep that choice where it is
  // smaller (issue 21; docs/BENCHMARKS.md, column weighting). Off: the plain
  // search alone (half the evaluations).
  bool column_weighting = true;
  const LayerEncoder* layer_encoder = nullptr;
  const Clock* clock = nullptr;
};

// Which tiers a request may add to a version. Devices may ask only for what the
// operator made the version offer: its ladder, and refinements from one ladder
// tier to another. Operators may add any refinement of a ladder tier.
enum class TierAccess { kLadder, kAnyRefinement };

struct RegisterRequest {
  std::string model;
  std::string version;
  std::string description;
  std::string ladder;       // empty: the default ladder
  std::string policy_json;  // empty: the default policy
  // An evaluation bundle (both or neither; common/eval/evaluator.h): uploaded
  // files, moved into the blob store on success. The server then measures the
  // accuracy of the checkpoint and of every tier it encodes.
  std::string eval_module_path;
  std::string eval_data_path;
  // A version of the same model, same tensors, to code deltas against (empty:
  // none).
  std::string base_version;
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
  static absl::StatusOr<std::unique_ptr<ModelStore>> Create(
      const ModelStoreOptions& options);
  ~ModelStore();  // Shutdown()

  // Stops encoding: jobs not started are dropped, running ones finish, and
  // every request still waiting for an encoding gets UNAVAILABLE. Unfinished
  // tiers are NOT_ENCODED again.
  void Shutdown();

  // Registers the checkpoint at `upload_path` (moved into the blob store on
  // success). INVALID_ARGUMENT naming the tensor for a bad checkpoint;
  // ALREADY_EXISTS for a taken label.
  absl::StatusOr<VersionRecord> Register(const RegisterRequest& request,
                                         const std::string& upload_path);
  absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
  List();
  absl::StatusOr<std::pair<VersionRecord, std::vector<TierRecord>>> Describe(
      const std::string& model, const std::string& version);
  absl::Status Delete(const std::string& model, const std::string& version);
  // Starts encoding `tiers` (empty: the whole ladder; refinements "qC+qF" of a
  // ladder tier qC may be named too) in the background.
  absl::Status Warm(const std::string& model, const std::string& version,
                    const std::vector<std::string>& tiers);
  absl::Status SetDefaultLadder(const std::string& ladder);
  absl::StatusOr<std::string> DefaultLadder();

  // The manifest of an encoded tier; encodes it first (and waits) if needed.
  // `tier` empty: the version's first tier; a refinement "qC+qF" of a ladder
  // tier qC is added to the version on first request when `access` allows it
  // (NOT_FOUND otherwise; a name that is not a tier's canonical spelling is
  // INVALID_ARGUMENT). `held`: blobs (hex SHA-256) the client holds; each delta
  // layer whose base is not among them is preceded by an entry for that base
  // (is_base). In a refinement the base entries come first, then the layers
  // coded on their own, then the P-picture layers.
  absl::StatusOr<Manifest> GetManifest(
      const std::string& model, const std::string& version,
      const std::string& tier,
      const absl::flat_hash_set<std::string>& held = {},
      TierAccess access = TierAccess::kAnyRefinement);

  const BlobStore& blobs() const { return *blobs_; }
  const EncoderPool& pool() const { return *pool_; }
  // Bytes of all encoded tiers' layers.
  absl::StatusOr<uint64_t> EncodedBytes() { return registry_->EncodedBytes(); }
  // The registry's reachability (registry.h Ping) and whether it is shared
  // (PostgreSQL).
  absl::Status PingRegistry() { return registry_->Ping(); }
  bool shared_registry() const { return registry_->shared(); }
  // Layers encoded since start (each layer of each (version, tier) encoding
  // once).
  int64_t layers_encoded() const { return layers_encoded_.load(); }

 private:
  // One (version, tier) being encoded, shared by its jobs and its waiters.
  struct Encoding {
    VersionRecord version;
    TierSpec tier;
    LayerPolicy policy;
    absl::Mutex mu;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::Status status ABSL_GUARDED_BY(mu);
    size_t remaining ABSL_GUARDED_BY(mu) =
        0;  // jobs of the current phase still to finish
    std::vector<LayerRecord> layers ABSL_GUARDED_BY(mu);
    // Budget tiers: per tensor, the measured curve (no points for layers whose
    // coding does not follow the tier's QP) and the bytes of those other
    // layers.
    std::vector<LayerRateCurve> curves ABSL_GUARDED_BY(mu);
    std::vector<uint64_t> fixed_bytes ABSL_GUARDED_BY(mu);
    // The stored checkpoint, read one tensor per job (set once by Prepare,
    // before layer jobs start).
    std::shared_ptr<const CheckpointSource> source;
    const EncoderPool::Urgency urgency =
        std::make_shared<std::atomic<bool>>(false);
    // Deltas: the base version's checkpoint and layers at this tier, and a
    // lease keeping them (set by Prepare); run once done (e.g. a delta tier
    // waiting for its base tier).
    std::shared_ptr<const CheckpointSource> base_source;
    std::vector<LayerRecord> base_layers;
    std::shared_ptr<void> base_lease;
    std::vector<std::function<void()>> then ABSL_GUARDED_BY(mu);
    // Accuracy tiers whose search weighed columns: the input RMS of the layers
    // coded with column scales (WeighColumns); set before the layer jobs
    // start.
    InputRmsMap input_rms;
    // Another replica holds the tier's lease: done at once, nothing recorded;
    // a waiter polls the registry (AwaitElsewhere).
    bool elsewhere ABSL_GUARDED_BY(mu) = false;
  };
  // What a budget tier measured of a version, reused by its other budget tiers.
  struct RateCurves {
    std::vector<LayerRateCurve> curves;
    std::vector<uint64_t> fixed_bytes;
  };
  int64_t NowSeconds() const;  // options_.clock
  ModelStore(ModelStoreOptions options, std::unique_ptr<Registry> registry,
             std::unique_ptr<BlobStore> blobs);
  // Starts (or joins) the encoding of (version, tier); `waiting` makes it
  // urgent.
  std::shared_ptr<Encoding> StartEncoding(const VersionRecord& version,
                                          const std::string& tier,
                                          bool waiting);
  void Prepare(std::shared_ptr<Encoding> encoding);
  // Register without the rewriting of server paths in its errors.
  absl::StatusOr<VersionRecord> RegisterFiles(const RegisterRequest& request,
                                              const std::string& upload_path);
  // Adds a refinement tier to the version when its coarse tier is in the ladder
  // and `access` allows it, or an accuracy tier when `access` is
  // kAnyRefinement (NOT_FOUND if not; RESOURCE_EXHAUSTED past
  // options_.max_tiers; FAILED_PRECONDITION for an accuracy tier of a version
  // without an evaluation bundle); other tiers are left to the ladder.
  absl::Status AddRefinementTier(const VersionRecord& version,
                                 const TierSpec& tier, TierAccess access);
  // Loads what a delta tier codes against; false (no deltas) when the base tier
  // did not encode.
  bool PrepareBase(const std::shared_ptr<Encoding>& encoding);
  // A layer job: the intra coding, or the delta on the base's layer when that
  // is smaller.
  absl::StatusOr<LayerRecord> EncodeLayerRecord(
      const std::shared_ptr<Encoding>& encoding, size_t index, int qp);
  // Lets the pool's idle workers code tiles of a layer job
  // (SharedParallelFor): one large layer uses every worker.
  void SpreadTiles(const std::shared_ptr<Encoding>& encoding,
                   LayerEncodeOptions* options);
  // Budget tiers: measures every layer (one job per (picture layer, grid QP),
  // one per other layer), then allocates QPs and encodes.
  void MeasureForBudget(const std::shared_ptr<Encoding>& encoding);
  // What MeasureForBudget measured: the picture layers' rate curves (with the
  // tensor each is of) and the bytes of the layers whose coding is fixed.
  struct MeasuredCurves {
    std::vector<LayerRateCurve> curves;
    std::vector<size_t> tensor_of;  // curve -> tensor index
    uint64_t fixed = 0;
  };
  static MeasuredCurves CurvesOf(Encoding& encoding);
  // A layer an accuracy search decoded, as the client would see it: with its
  // packed bytes and SNR (the picture's own, column scales counted).
  struct DecodedLayer {
    Tensor tensor;
    uint64_t bytes = 0;
    double sqnr_db = 0;
  };
  // Where decoded_layers_ keeps a layer of `version` (its id first, for
  // Delete) coded for `tier` at `qp` (0: the tier's fixed coding), its columns
  // weighed or not. The rest of what codes it (the tier's spec but its float
  // codec, the version's policy, the server's preset) is the same for every
  // accuracy tier of the version.
  static std::string DecodedLayerKey(const VersionRecord& version,
                                     const TierSpec& tier, size_t index, int qp,
                                     bool columns);
  // Keeps `layer` (tensor `index` of the encoding at `qp`, `bytes` packed)
  // decoded in decoded_layers_, for an accuracy tier's search.
  void KeepDecoded(const Encoding& encoding, size_t index, int qp,
                   const PackedLayer& layer, uint64_t bytes);
  void AllocateAndEncode(const std::shared_ptr<Encoding>& encoding);
  // Encodes every layer, one job each; `qps` (one per tensor, or empty)
  // overrides the tier's QP.
  void EncodeLayers(const std::shared_ptr<Encoding>& encoding,
                    std::vector<int> qps);
  // Accuracy tiers: the smallest candidate within the tier's top-1 drop (or
  // at its output cosine) of the plain search and, with column weighting, the
  // weighed one (its columns' input RMS left in encoding->input_rms), kept in
  // the registry; then encodes it.
  absl::StatusOr<AccuracyChoice> SearchAccuracy(
      const std::shared_ptr<Encoding>& encoding);
  void EncodeAccuracyTier(const std::shared_ptr<Encoding>& encoding);
  // Encodes a choice kept from a past search (measuring the input RMS again
  // when its columns are weighed).
  void EncodeSearchedTier(const std::shared_ptr<Encoding>& encoding,
                          AccuracyChoice choice);
  // The input RMS of the encoding's layers worth weighing whose QP follows
  // the tier, measured by `evaluator` (the version's bundle) on the float
  // model.
  absl::StatusOr<InputRmsMap> InputRmsToWeighOf(const Encoding& encoding,
                                                Evaluator& evaluator);
  // An evaluator of the bundle at these paths that Shutdown cancels between
  // batches (Evaluator::SetCancel), so that stopping never waits for a whole
  // evaluation.
  absl::StatusOr<std::unique_ptr<Evaluator>> LoadEvaluator(
      const std::string& module_path, const std::string& data_path);
  // The same, of `version`'s stored bundle.
  absl::StatusOr<std::unique_ptr<Evaluator>> LoadEvaluator(
      const VersionRecord& version);
  // `message` with the paths of the version's bundle files named as such (a
  // client learns which file was wrong, never where the server keeps it).
  std::string NameBundleFiles(const VersionRecord& version,
                              absl::string_view message) const;
  // Gives `evaluator` (of `version`'s bundle) the float model's outputs: kept
  // ones, or the stored float checkpoint run now (and kept).
  absl::Status SetReferenceOf(const VersionRecord& version,
                              Evaluator& evaluator);
  // Keeps a float model's outputs on a bundle under `key` (ReferenceKey), if
  // they have rows.
  void KeepReference(const std::string& key,
                     std::shared_ptr<const ReferenceOutputs> outputs);
  // Where a float checkpoint's outputs on a bundle are kept: by the digests.
  static std::string ReferenceKey(const std::string& checkpoint_sha256,
                                  const std::string& module_sha256,
                                  const std::string& data_sha256) {
    return checkpoint_sha256 + "/" + module_sha256 + "/" + data_sha256;
  }
  // What a past search of (version, tier) chose, if kept.
  std::optional<AccuracyChoice> SearchedChoice(const VersionRecord& version,
                                               const std::string& tier);
  // Measures the accuracy of a READY tier on the version's evaluation bundle in
  // the background.
  void StartEvaluation(const std::string& model, const std::string& version,
                       const std::string& tier);
  void Evaluate(int64_t version_id, const std::string& model,
                const std::string& version, const std::string& tier);
  // Keeps (version, tier) from eviction while the returned handle lives.
  std::shared_ptr<void> Lease(const std::pair<int64_t, std::string>& key);
  void Finish(const std::shared_ptr<Encoding>& encoding);
  // Waits (polling the registry) while another replica encodes (version,
  // tier): OK once it is READY, or once this replica took the lease over
  // and encoded it itself.
  absl::Status AwaitElsewhere(const VersionRecord& record,
                              const std::string& tier);
  void Fail(const std::shared_ptr<Encoding>& encoding, absl::Status status);
  // Evicts least recently used tiers until the encoded bytes fit
  // options_.cache_bytes; never `keep` (a tier just encoded, which its waiters
  // are about to read).
  void EnforceCacheBudget(const std::pair<int64_t, std::string>& keep = {0,
                                                                         ""});

  const ModelStoreOptions options_;
  const std::unique_ptr<Registry> registry_;
  const std::unique_ptr<BlobStore> blobs_;
  // Replicas on a shared registry: who encodes which tier (null with SQLite).
  std::unique_ptr<TierLeases> encode_leases_;
  std::atomic<int64_t> layers_encoded_{0};  // a counter for tests and metrics
  // By ReferenceKey.
  LruCache<ReferenceOutputs> references_{kReferenceCacheBytes};
  // By DecodedLayerKey (model_store_accuracy.cc); a deleted version's dropped.
  LruCache<DecodedLayer> decoded_layers_{kDecodedLayerCacheBytes};
  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<int64_t, std::string>,
                      std::shared_ptr<Encoding>>
      encodings_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by Shutdown() before it waits for the workers: a running layer stops
  // at its next tile (LayerEncodeOptions::cancelled).
  std::atomic<bool> cancelling_{false};
  // By version and the tiers' float codec (accuracy tiers' float layers are
  // float16: other fixed bytes).
  absl::flat_hash_map<std::pair<int64_t, LayerCodec>,
                      std::shared_ptr<const RateCurves>>
      rate_curves_ ABSL_GUARDED_BY(mu_);
  // The same curves with the layers worth weighing coded with column scales
  // (an accuracy tier's weighed search), reused by the version's other
  // accuracy tiers.
  absl::flat_hash_map<int64_t,
                      std::shared_ptr<const std::vector<LayerRateCurve>>>
      weighed_curves_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::pair<int64_t, std::string>> evaluating_
      ABSL_GUARDED_BY(mu_);
  // Streams per tier. Shared with the leases, which may outlive the store.
  struct LeaseTable {
    absl::Mutex mu;
    absl::flat_hash_map<std::pair<int64_t, std::string>, int> counts
        ABSL_GUARDED_BY(mu);
  };
  const std::shared_ptr<LeaseTable> leases_ = std::make_shared<LeaseTable>();
  absl::Mutex evict_mu_;  // one eviction pass at a time
  const std::unique_ptr<EncoderPool>
      pool_;  // last: its workers use everything above
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_MODEL_STORE_H_
