// The weightcast client SDK: register, list, describe and pull models from a
// weightcastd server. A pull picks a tier (by name, byte budget, fidelity, or
// link speed and deadline), decodes layers on a thread pool as their bytes
// arrive, verifies every layer's SHA-256, resumes a dropped stream where it
// stopped, and writes the model atomically. The public types are std and absl
// only. A Client is thread-safe; calls may run concurrently.
#ifndef WEIGHTCAST_CLIENT_SDK_CLIENT_H_
#define WEIGHTCAST_CLIENT_SDK_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace weightcast {

struct Model;  // common/tensor/tensor.h: PullOptions::output_model

struct ConnectOptions {
  std::string address = "127.0.0.1:50051";
  absl::Duration call_timeout = absl::Minutes(30);  // per RPC
  // TLS: on when a root certificate is given. The client certificate and key
  // make it mutual TLS.
  std::string tls_root_certs_pem;
  std::string tls_cert_chain_pem;
  std::string tls_private_key_pem;
  std::string
      token;  // sent as "authorization: Bearer <token>" on every call when set
};

// Top-1/top-2 accuracy (percent) the server measured on the version's
// evaluation bundle.
struct AccuracyFigures {
  double top1 = 0;  // percent; 0 and meaningless when !labelled
  double top2 = 0;
  uint64_t examples = 0;
  // Mean cosine between this model's outputs and the float model's (1 for
  // the float model); none from servers before it.
  std::optional<double> output_cosine;
  // false: the version's bundle has inputs only; select by cosine, not drop.
  bool labelled = true;
};

struct LayerSummary {
  std::string name;
  std::string codec;  // HEVC, ZSTD_INT8, FLOAT32, ...
  uint64_t bytes = 0;
  double bits_per_weight = 0;
  double sqnr_db = 0;  // against the float weights (inf when exact)
  int qp = 0;          // HEVC layers: the QP coded at
  // int8 layers: "per-tensor-symmetric", "per-channel-symmetric", ... (the
  // scales a rebuilt int8 model carries: one, or one per output channel); empty
  // for float and passthrough layers; "+outliers" appended for a layer of the
  // outlier front end (its largest weights in a float16 side list), "+cols"
  // for one coded with column scales from its inputs' RMS, "+mosaic" for a
  // picture of its rows' blocks (the layer policy's "mosaics").
  std::string quant_scheme;
};

struct TierSummary {
  std::string name;
  std::string state;   // NOT_ENCODED | ENCODING | READY | FAILED
  uint64_t bytes = 0;  // READY tiers only
  double bits_per_weight = 0;
  double worst_sqnr_db = 0;  // over picture layers
  // Over every layer, picture or not, and which layer that is (from older
  // servers: the picture layers' figure and no name).
  double worst_layer_sqnr_db = 0;
  std::string worst_layer;
  std::optional<AccuracyFigures>
      accuracy;                      // none: no bundle, or not measured yet
  std::vector<LayerSummary> layers;  // READY tiers only
  // FAILED tiers: why; READY tiers with no accuracy (a version with a bundle):
  // why it could not be measured.
  std::string error;
};

// One tensor of a version, as registered.
struct TensorDescription {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype;        // "float32", "int64", ...
  std::string layer_class;  // picture | int8 | float | passthrough
};

struct ModelInfo {
  std::string model;
  std::string version;
  std::string description;
  std::string layer_policy;
  uint64_t source_bytes = 0;
  int64_t float_weights = 0;  // elements of floating-point tensors
  int tensors = 0;
  bool has_eval_bundle = false;
  std::optional<AccuracyFigures>
      reference_accuracy;    // of the checkpoint as registered
  std::string base_version;  // what its deltas are coded against; empty: none
  std::vector<TierSummary> tiers;
  std::vector<TensorDescription> tensor_list;  // in the version's order
};

// How to choose a tier. The first criterion set wins: name, then the others
// combined: the largest READY tier that satisfies every bound given, or with
// max_accuracy_drop or min_output_cosine the smallest (refinement tiers "C+qF"
// only by name; PullOptions::coarse_tier pulls them progressively).
struct TierSelector {
  std::string name;        // e.g. "q27"
  uint64_t max_bytes = 0;  // "the largest tier that fits in 5 MB"
  double min_sqnr_db = 0;  // every layer (picture or not) at least this SQNR
  // "the smallest tier within 1.0 point of the original's top-1" (negative: not
  // used). Needs a version registered with an evaluation bundle; tiers not yet
  // measured are skipped.
  double max_accuracy_drop = -1;
  double bits_per_second =
      0;  // with `within`: "arrives within 30 s at 2 Mbit/s"
  absl::Duration within = absl::ZeroDuration();
  // "the smallest tier whose outputs keep a mean cosine of 0.99 with the float
  // model's": for a bundle with or without labels (an embedding model); tiers
  // not yet measured are skipped.
  std::optional<double> min_output_cosine;
};

// Picks a tier from `info` (pure; exposed for tests and the CLI). NOT_FOUND
// names the bound no encoded tier meets.
absl::StatusOr<std::string> SelectTier(const ModelInfo& info,
                                       const TierSelector& selector);

struct PullProgress {
  uint64_t bytes_received = 0;
  uint64_t total_bytes = 0;
  int layers_decoded = 0;
  int layers_total = 0;
  int decode_backlog = 0;  // layers received, not yet decoded
  double seconds = 0;
  int reconnects = 0;
  // > 0 before the stream: a selection by bytes, fidelity, accuracy or link
  // speed waits for the server to encode or measure this many tiers.
  int tiers_pending = 0;
};

// The first, coarse model of a progressive pull, handed over while its
// refinement arrives.
struct CoarseModel {
  std::string tier;         // e.g. "q37"
  std::string output_path;  // where it was written ("" when no
                            // coarse_output_path was given)
  uint64_t bytes =
      0;  // received up to this point (manifest layers, not protocol overhead)
  double seconds = 0;  // since the pull began
};

struct PullOptions {
  std::string model;
  std::string version = "latest";
  TierSelector tier;
  std::string output_path;  // .pt or .safetensors; written atomically
  // In memory, with or instead of output_path: the tensors the file would hold
  // (float32, or with int8_output int8 tensors and their scales), moved here.
  // Caller owns; must outlive the call.
  Model* output_model = nullptr;
  bool int8_output = false;
  int decode_threads = 0;  // 0: one per core
  int max_reconnects = 8;  // retries of a dropped stream, with backoff
  double max_bytes_per_second =
      0;                  // 0: unlimited; else reads are paced to this rate
  bool pipelined = true;  // false: download everything, then decode (the
                          // baseline benchmarks use)
  std::function<void(const PullProgress&)>
      progress;                               // called from the pulling thread
  const std::atomic<bool>* cancel = nullptr;  // set to stop: CANCELLED
  // Delta pulls: a directory where the SDK keeps packed layers (named by
  // SHA-256). The server is told which it holds and sends the layers of
  // versions registered with a base as P pictures on them; afterwards this
  // pull's HEVC layers are kept there as bases for the next version. A held
  // layer that turns out damaged is deleted and the pull repeated whole. Empty:
  // none.
  std::string base_dir;
  // Progressive pulls: when the selected tier is a qNN finer than `coarse_tier`
  // (a qNN or budget-N tier of the ladder), the server sends `coarse_tier`
  // first and then a refinement to the selected tier coded as P pictures on it
  // (tier "<coarse>+<selected>"). As soon as every layer of the coarse model is
  // verified it is written to `coarse_output_path` (if set; atomically, like
  // the output) and `on_coarse` runs on the pulling thread; the pull goes on
  // and ends with the refined model in `output_path`. Held bases are not
  // offered in a progressive pull. When the selected tier is not finer than
  // `coarse_tier`, the pull is a plain pull of it.
  std::string coarse_tier;
  std::string coarse_output_path;
  std::function<void(const CoarseModel&)> on_coarse;
  // Added for large models (at the end, so that positional initializers of
  // the fields above still compile).
  // A .safetensors or .pt output (float or int8) is written while the layers
  // decode: its layout computed from the manifest and the described tensors,
  // each tensor written at its offset as soon as it is verified, so the
  // client never holds the whole model (the same bytes as the whole-model
  // writer); in a progressive pull the coarse output likewise (committed at
  // the hand-over; the coarse model's packed picture layers are kept as the
  // refinement's bases). false: the whole model is collected and written at
  // the end (so are pulls with an output_model, with a coarse output that is
  // neither kind, and from a server whose manifests do not give int8 layers'
  // schemes, for int8 outputs).
  bool stream_output = true;
  // > 0: `output_path` is a directory that receives sharded safetensors,
  // model-0000k-of-0000n.safetensors of at most this many bytes of tensor data
  // each (a larger tensor alone in its shard), and
  // model.safetensors.index.json (transformers' sharded layout). Streamed.
  uint64_t shard_bytes = 0;
  // Multi-tile HEVC layers are decoded one job per tile, so a large layer uses
  // every decode thread. false: one job per layer (the baseline benchmarks
  // use).
  bool tile_jobs = true;
  // With tile jobs, a pipelined pull decodes a multi-tile layer's tiles as
  // their bytes arrive, so that it ends about one tile's decode after its last
  // byte; nothing of a layer is finished before its SHA-256 is checked. A
  // layer starts so only while the decoder has nothing else waiting, so a
  // link faster than the decoder holds no more than without it. false: a
  // layer's tiles start once it is whole (the baseline benchmarks compare
  // with).
  bool decode_arriving = true;
  // When the server's manifests name a blob URL (weightcastd --blob-base-url),
  // GET the layers' bytes there over HTTP (an nginx or CDN cache in front of
  // the server), resuming with Range and checking each blob's SHA-256; gRPC
  // then carries the manifest only. Any HTTP failure: the rest of the pull
  // goes over the Pull stream. The token, when set, is sent as the
  // Authorization header. On: every pull asks for the manifest with
  // GetManifest first (one more round trip when the server names no URL).
  // false: the Pull stream only.
  bool http_blobs = true;
};

struct PullResult {
  std::string version;
  std::string tier;
  uint64_t bytes = 0;
  double seconds = 0;
  int reconnects = 0;
  int layers_refetched = 0;
  int delta_layers = 0;  // layers that came as deltas on a held or sent base
  bool delta_fallback =
      false;  // a held base was damaged: pulled again without deltas
  // Hex SHA-256 of the layers in base_dir this version was decoded against or
  // left there as bases for the next: what to keep while it is installed (the
  // rest may be deleted).
  std::vector<std::string> bases_needed;
  // Progressive pulls: the coarse model handed over first (tier empty: none
  // was).
  CoarseModel coarse;
  // The output was written while the layers decoded (PullOptions::
  // stream_output), not collected and written at the end.
  bool streamed_output = false;
  int http_layers = 0;         // layers whose bytes came over HTTP
  bool http_fallback = false;  // an HTTP GET failed: the rest came over gRPC
  // What went wrong and was worked around, one sentence each (an HTTP download
  // that fell back to gRPC, a coarse model that could not be handed over, a
  // held base that was damaged). The SDK never prints: callers show these.
  // The text may hold a server's words: print it through Printable.
  std::vector<std::string> warnings;
};

struct RegisterOptions {
  std::string model;
  std::string version;
  std::string checkpoint_path;
  std::string tier_ladder;  // empty: the server's default
  std::string description;
  std::string layer_policy_json;  // empty: the default policy
  // Evaluation bundle (both or neither): a TorchScript module (torch.jit.save)
  // and a tensor file with "inputs" and, for a classifier, "labels". The
  // server then measures every tier's top-1/top-2 (with labels) and the cosine
  // of its outputs with the float model's.
  std::string eval_module_path;
  std::string eval_data_path;
  // A registered version of the same model with the same tensors: this
  // version's lossy HEVC tiers code their picture layers as deltas on it where
  // that is smaller (PullOptions::base_dir).
  std::string base_version;
};

// Fleet push (a device's side).
struct WatchOptions {
  std::string device_id;
  std::vector<std::string> groups;
  std::vector<std::string> models;  // the models this device runs
  std::string tier_name;  // the tier it wants ("" : chosen by the device)
  std::vector<std::pair<std::string, std::string>>
      installed;  // (model, version) it holds
  std::function<bool()>
      should_end;  // polled every 50 ms: true ends the watch (CANCELLED)
};

struct AssignmentInfo {
  std::string model;
  std::string version;
  std::string tier;    // empty: the device selects by its own policy
  std::string reason;  // ROLLOUT | BASELINE | ROLLBACK
};

struct DeviceStatusReport {
  std::string device_id;
  std::string model;
  std::string version;
  std::string tier;
  std::string state;  // DOWNLOADING | INSTALLED | FAILED
  std::string reason;
  uint64_t bytes = 0;
  double seconds = 0;
};

// Fleet push (an operator's side).
struct RolloutInfo {
  std::string model;
  std::string version;
  std::string baseline_version;
  double percent = 0;
  std::vector<std::string> groups;
  std::string state;  // ACTIVE | PAUSED | ROLLED_BACK
  struct Count {
    std::string version;
    std::string state;
    uint64_t devices = 0;
  };
  std::vector<Count> counts;
  uint64_t subscribers = 0;
  // Devices that reported `state` for `version`.
  uint64_t Devices(const std::string& version, const std::string& state) const;
};

struct RolloutUpdate {
  double percent = -1;  // < 0: unchanged
  std::optional<std::vector<std::string>> groups;
  std::optional<bool> paused;
};

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const ConnectOptions& options);
  virtual ~Client() = default;

  virtual absl::StatusOr<ModelInfo> Register(
      const RegisterOptions& options) = 0;
  virtual absl::StatusOr<
      std::vector<std::pair<std::string, std::vector<std::string>>>>
  List() = 0;
  virtual absl::StatusOr<ModelInfo> Describe(const std::string& model,
                                             const std::string& version) = 0;
  virtual absl::Status Warm(const std::string& model,
                            const std::string& version,
                            const std::vector<std::string>& tiers) = 0;
  virtual absl::Status Delete(const std::string& model,
                              const std::string& version) = 0;
  // grpc.health.v1 Check of the whole server: true when SERVING (false while it
  // drains). UNAVAILABLE when it cannot be reached within `timeout`.
  virtual absl::StatusOr<bool> Health(
      absl::Duration timeout = absl::Seconds(5)) = 0;

  // Watches for assignments until the stream ends (its status: UNAVAILABLE when
  // the server goes, CANCELLED when `should_end` says so). `on_assignment` runs
  // on the calling thread, one at a time; `on_keepalive` (optional) on each
  // keepalive. No call timeout applies.
  virtual absl::Status Watch(
      const WatchOptions& options,
      const std::function<void(const AssignmentInfo&)>& on_assignment,
      const std::function<void()>& on_keepalive = nullptr) = 0;
  virtual absl::Status ReportStatus(const DeviceStatusReport& report) = 0;

  virtual absl::StatusOr<RolloutInfo> StartRollout(
      const std::string& model, const std::string& version, double percent,
      const std::vector<std::string>& groups) = 0;
  virtual absl::StatusOr<RolloutInfo> UpdateRollout(
      const std::string& model, const RolloutUpdate& update) = 0;
  virtual absl::StatusOr<RolloutInfo> RollbackRollout(
      const std::string& model) = 0;
  virtual absl::StatusOr<RolloutInfo> GetRollout(const std::string& model) = 0;
  // DATA_LOSS naming the layer if a layer fails verification twice; ABORTED if
  // the version changed under a resumed pull; UNAVAILABLE when reconnects run
  // out.
  virtual absl::StatusOr<PullResult> Pull(const PullOptions& options) = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_CLIENT_H_
