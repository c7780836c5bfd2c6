#include "server/core/model_store.h"

#include <malloc.h>

#include <cstdio>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/base/names.h"
#include "common/base/printable.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint_source.h"
#include "common/eval/evaluator.h"
#include "common/pack/layer_policy.h"
#include "common/pack/packed_model.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

absl::Status CheckLabel(absl::string_view what, absl::string_view label) {
  RETURN_IF_ERROR(CheckName(what, label, kMaxLabelBytes));
  if (label == "latest")
    return absl::InvalidArgumentError(
        absl::StrCat(what, " 'latest' is reserved"));
  return absl::OkStatus();
}

// The tiers of `ladder`; INVALID_ARGUMENT beyond `max_tiers`, or for an
// accuracy tier in a default ladder (`for_default`: most versions have no
// evaluation bundle).
absl::StatusOr<std::vector<TierSpec>> ParseLadder(const std::string& ladder,
                                                  size_t max_tiers,
                                                  bool for_default = false) {
  ASSIGN_OR_RETURN(std::vector<TierSpec> tiers, ParseTierList(ladder));
  if (tiers.size() > max_tiers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ladder has ", tiers.size(), " tiers; this server allows at most ",
        max_tiers, " per version (--max-tiers)"));
  }
  for (const TierSpec& tier : tiers) {
    if (for_default && IsAccuracyTier(tier)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tier '", tier.name,
          "' needs an evaluation bundle: name it in a version's ladder, not "
          "the default one"));
    }
  }
  return tiers;
}

// An acc-X tier needs a bundle with labels (its top-1 is what it is chosen
// by), a cos-C tier a bundle; FAILED_PRECONDITION naming the version
// otherwise. `reference`: the version's measured reference accuracy, none
// without a bundle.
absl::Status NeedsLabels(const std::string& model, const std::string& version,
                         const std::optional<Accuracy>& reference,
                         const TierSpec& tier) {
  const bool by_top1 = tier.max_top1_drop_hundredths >= 0;
  if (!IsAccuracyTier(tier) || (reference && (reference->labelled || !by_top1)))
    return absl::OkStatus();
  if (reference) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tier '", tier.name,
        "' is chosen by measured top-1: it needs an evaluation bundle with "
        "labels, and ",
        model, "/", version,
        "'s has inputs only (its tiers show the output cosine; a cos-C tier "
        "is chosen by it)"));
  }
  const std::string what =
      by_top1 ? absl::StrCat("within ", tier.max_top1_drop_hundredths / 100.0,
                             " points of the float model's measured top-1")
              : absl::StrCat("whose outputs keep a mean cosine of at least ",
                             tier.min_cosine_ten_thousandths / 10000.0,
                             " with the float model's");
  return absl::FailedPreconditionError(
      absl::StrCat("tier '", tier.name, "' is the smallest model ", what,
                   ": it needs an evaluation bundle, and ", model, "/", version,
                   " was registered without one"));
}

}  // namespace

int64_t ModelStore::NowSeconds() const {
  return absl::ToUnixSeconds(options_.clock->Now());
}

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Create(
    const ModelStoreOptions& given) {
  ModelStoreOptions options = given;
  if (options.layer_encoder == nullptr)
    options.layer_encoder = &X265LayerEncoder();
  if (options.clock == nullptr) options.clock = &SystemClock();
  RETURN_IF_ERROR(ParseLadder(options.default_ladder, options.max_tiers,
                              /*for_default=*/true)
                      .status());
  std::error_code error;
  std::filesystem::create_directories(options.data_dir, error);
  if (error)
    return absl::UnavailableError(
        absl::StrCat(options.data_dir, ": ", error.message()));
  ASSIGN_OR_RETURN(std::unique_ptr<Registry> registry,
                   Registry::Open(options.registry.empty()
                                      ? options.data_dir + "/registry.db"
                                      : options.registry));
  ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> blobs,
                   BlobStore::Open(options.data_dir,
                                   /*shared=*/!options.registry.empty()));
  std::unique_ptr<ModelStore> store(
      new ModelStore(options, std::move(registry), std::move(blobs)));
  if (store->registry_->shared()) {
    store->encode_leases_ = std::make_unique<TierLeases>(store->registry_.get(),
                                                         options.encode_lease);
  }
  store->EnforceCacheBudget();  // the budget may have shrunk since the last run
  if (auto awaiting = store->registry_->TiersAwaitingAccuracy();
      awaiting.ok()) {
    for (const auto& [model, version, tier] : *awaiting)
      store->StartEvaluation(model, version, tier);
  }
  return store;
}

ModelStore::ModelStore(ModelStoreOptions options,
                       std::unique_ptr<Registry> registry,
                       std::unique_ptr<BlobStore> blobs)
    : options_(std::move(options)),
      registry_(std::move(registry)),
      blobs_(std::move(blobs)),
      pool_(std::make_unique<EncoderPool>(options_.workers)) {}

ModelStore::~ModelStore() { Shutdown(); }

void ModelStore::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  cancelling_.store(true);
  pool_->Stop();
  std::vector<std::shared_ptr<Encoding>> abandoned;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, encoding] : encodings_) abandoned.push_back(encoding);
  }
  for (const auto& encoding : abandoned) {
    registry_
        ->SetTierState(encoding->version.id, encoding->tier.name,
                       TierState::kNotEncoded, "")
        .IgnoreError();
    {
      absl::MutexLock lock(&mu_);
      encodings_.erase(
          std::make_pair(encoding->version.id, encoding->tier.name));
    }
    absl::MutexLock lock(&encoding->mu);
    encoding->status = absl::UnavailableError("the server is shutting down");
    encoding->done = true;
  }
}

absl::StatusOr<std::string> ModelStore::DefaultLadder() {
  return registry_->GetSetting("default_ladder", options_.default_ladder);
}

absl::Status ModelStore::SetDefaultLadder(const std::string& ladder) {
  RETURN_IF_ERROR(
      ParseLadder(ladder, options_.max_tiers, /*for_default=*/true).status());
  return registry_->SetSetting("default_ladder", ladder);
}

absl::StatusOr<VersionRecord> ModelStore::Register(
    const RegisterRequest& request, const std::string& upload_path) {
  absl::StatusOr<VersionRecord> registered =
      RegisterFiles(request, upload_path);
  if (registered.ok()) return registered;
  // The caller learns which of its files was wrong, never where the server
  // keeps it.
  std::vector<std::pair<absl::string_view, absl::string_view>> names = {
      {upload_path, "the uploaded checkpoint"}};
  if (!request.eval_module_path.empty())
    names.push_back({request.eval_module_path, "the evaluation module"});
  if (!request.eval_data_path.empty())
    names.push_back({request.eval_data_path, "the evaluation data"});
  const std::string message =
      absl::StrReplaceAll(registered.status().message(), names);
  if (message == registered.status().message()) return registered;
  std::fprintf(stderr, "weightcastd: register %s/%s: %s\n",
               Printable(request.model).c_str(),
               Printable(request.version).c_str(),
               Printable(registered.status().message()).c_str());
  return absl::Status(registered.status().code(), message);
}

absl::StatusOr<VersionRecord> ModelStore::RegisterFiles(
    const RegisterRequest& request, const std::string& upload_path) {
  RETURN_IF_ERROR(CheckLabel("model name", request.model));
  RETURN_IF_ERROR(CheckLabel("version label", request.version));
  std::string ladder = request.ladder;
  if (ladder.empty()) {
    ASSIGN_OR_RETURN(ladder, DefaultLadder());
  }
  ASSIGN_OR_RETURN(const std::vector<TierSpec> tiers,
                   ParseLadder(ladder, options_.max_tiers));
  ASSIGN_OR_RETURN(const LayerPolicy policy,
                   ParseLayerPolicy(request.policy_json));
  if (registry_->GetVersion(request.model, request.version).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("model '", request.model,
                                                 "' already has a version '",
                                                 request.version, "'"));
  }
  std::optional<VersionRecord> base;
  if (!request.base_version.empty()) {
    auto found = registry_->GetVersion(request.model, request.base_version);
    if (!found.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("base version: ", found.status().message()));
    }
    base = *std::move(found);
  }
  // The checkpoint is read one tensor at a time (a safetensors file on demand):
  // its headers first for the checks that need no data.
  ASSIGN_OR_RETURN(const std::unique_ptr<CheckpointSource> source,
                   CheckpointSource::Open(upload_path));
  const std::vector<Tensor>& headers = source->headers();
  if (headers.empty())
    return absl::InvalidArgumentError(
        absl::StrCat(upload_path, ": no tensors"));
  if (base) {
    const auto differs = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("base version '", base->version,
                       "' has another architecture: ", what));
    };
    if (base->tensors.size() != headers.size()) {
      return differs(absl::StrCat(
          base->tensors.size(), " tensors, this checkpoint ", headers.size()));
    }
    for (size_t i = 0; i < headers.size(); ++i) {
      if (base->tensors[i].name != headers[i].name ||
          base->tensors[i].shape != headers[i].shape) {
        return differs(absl::StrCat(
            "tensor ", i, " is '", base->tensors[i].name, "' ",
            ShapeToString(base->tensors[i].shape), ", here '", headers[i].name,
            "' ", ShapeToString(headers[i].shape)));
      }
    }
  }
  if (headers.size() > options_.max_tensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint holds ", headers.size(),
                     " tensors; this server accepts at most ",
                     options_.max_tensors, " (--max-tensors)"));
  }
  for (const Tensor& t : headers) {
    if (t.shape.size() > options_.max_tensor_rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, " has ", t.shape.size(),
                       " dimensions; this server accepts at most ",
                       options_.max_tensor_rank));
    }
  }
  // Every tensor's data, in bounded chunks: finite, the file not cut short.
  RETURN_IF_ERROR(source->CheckData());
  std::optional<Accuracy> reference;
  std::shared_ptr<const ReferenceOutputs> reference_outputs;
  const bool bundle =
      !request.eval_module_path.empty() || !request.eval_data_path.empty();
  for (const TierSpec& tier : tiers) {
    if (!bundle)
      RETURN_IF_ERROR(
          NeedsLabels(request.model, request.version, std::nullopt, tier));
  }
  if (bundle) {
    if (request.eval_module_path.empty() || request.eval_data_path.empty()) {
      return absl::InvalidArgumentError(
          "an evaluation bundle needs both the TorchScript module and the data "
          "file");
    }
    auto measured = [&]() -> absl::StatusOr<Accuracy> {
      ASSIGN_OR_RETURN(
          std::unique_ptr<Evaluator> evaluator,
          LoadEvaluator(request.eval_module_path, request.eval_data_path));
      // The evaluator loads every weight into the module: the whole model in
      // memory (bundles are for models small enough to run here).
      ASSIGN_OR_RETURN(const Model model, source->ReadAll());
      // One pass: the figures, and the outputs the tiers' measurements use.
      ASSIGN_OR_RETURN(Accuracy figures, evaluator->SetReference(model));
      reference_outputs = std::make_shared<const ReferenceOutputs>(
          evaluator->reference(references_.budget_bytes() / sizeof(float)));
      return figures;
    }();
    if (!measured.ok()) {
      return absl::Status(
          measured.status().code(),
          absl::StrCat("evaluation bundle: ", measured.status().message()));
    }
    reference = *measured;
    for (const TierSpec& tier : tiers)
      RETURN_IF_ERROR(
          NeedsLabels(request.model, request.version, reference, tier));
  }

  VersionRecord record;
  record.model = request.model;
  record.version = request.version;
  record.description = request.description;
  record.ladder = ladder;
  record.policy_json = request.policy_json;
  if (base) record.base_version = base->version;
  record.created_unix_seconds = NowSeconds();
  for (const Tensor& t : headers) {
    record.tensors.push_back(
        {t.name, t.shape, std::string(DTypeName(t.dtype)),
         std::string(LayerClassName(ClassifyTensor(t, policy)))});
  }
  std::error_code size_error;
  record.source_bytes = std::filesystem::file_size(upload_path, size_error);
  if (size_error)
    return absl::InternalError(
        absl::StrCat(upload_path, ": ", size_error.message()));
  ASSIGN_OR_RETURN(record.source_sha256, blobs_->Adopt(upload_path));
  if (bundle) {
    record.reference_accuracy = reference;
    auto module = blobs_->Adopt(request.eval_module_path);
    auto data = module.ok() ? blobs_->Adopt(request.eval_data_path) : module;
    if (!data.ok()) {
      auto unreferenced = registry_->Unreferenced(
          {record.source_sha256, module.ok() ? *module : ""});
      if (unreferenced.ok()) {
        for (const std::string& sha : *unreferenced) {
          if (!sha.empty()) blobs_->Remove(sha).IgnoreError();
        }
      }
      return data.status();
    }
    record.eval_module_sha256 = *module;
    record.eval_data_sha256 = *data;
    KeepReference(ReferenceKey(record.source_sha256, *module, *data),
                  std::move(reference_outputs));
  }
  std::vector<std::string> tier_names;
  for (const TierSpec& tier : tiers) tier_names.push_back(tier.name);
  absl::StatusOr<int64_t> id = registry_->AddVersion(record, tier_names);
  if (!id.ok()) {
    // Keep a blob only if another version holds the same file.
    auto unreferenced = registry_->Unreferenced({record.source_sha256,
                                                 record.eval_module_sha256,
                                                 record.eval_data_sha256});
    if (unreferenced.ok()) {
      for (const std::string& sha : *unreferenced) {
        if (!sha.empty()) blobs_->Remove(sha).IgnoreError();
      }
    }
    return id.status();
  }
  record.id = *id;
  return record;
}

absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
ModelStore::List() {
  return registry_->ListModels();
}

absl::StatusOr<std::pair<VersionRecord, std::vector<TierRecord>>>
ModelStore::Describe(const std::string& model, const std::string& version) {
  ASSIGN_OR_RETURN(VersionRecord record, registry_->GetVersion(model, version));
  ASSIGN_OR_RETURN(std::vector<TierRecord> tiers,
                   registry_->GetTiers(record.id));
  {
    absl::MutexLock lock(&mu_);
    for (TierRecord& tier : tiers) {
      if (encodings_.contains(std::make_pair(record.id, tier.tier)))
        tier.state = TierState::kEncoding;
    }
  }
  return std::make_pair(std::move(record), std::move(tiers));
}

absl::Status ModelStore::Delete(const std::string& model,
                                const std::string& version) {
  ASSIGN_OR_RETURN(const VersionRecord record,
                   registry_->GetVersion(model, version));
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, encoding] : encodings_) {
      if (key.first == record.id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tier '", key.second, "' of ", model, "/", record.version,
            " is being encoded; delete it when that is done"));
      }
    }
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> unreferenced,
                   registry_->DeleteVersion(record.id));
  {
    absl::MutexLock lock(&mu_);
    rate_curves_.erase({record.id, LayerCodec::kFloat32});
    rate_curves_.erase({record.id, LayerCodec::kFloat16});
    weighed_curves_.erase(record.id);
  }
  decoded_layers_.ErasePrefix(absl::StrCat(record.id, "/"));
  for (const std::string& sha : unreferenced) blobs_->Remove(sha).IgnoreError();
  return absl::OkStatus();
}

absl::Status ModelStore::AddRefinementTier(const VersionRecord& version,
                                           const TierSpec& tier,
                                           TierAccess access) {
  RETURN_IF_ERROR(NeedsLabels(
      version.model, version.version,
      version.has_eval_bundle() ? version.reference_accuracy : std::nullopt,
      tier));
  if ((tier.refines.empty() && !IsAccuracyTier(tier)) ||
      registry_->GetTier(version.id, tier.name).ok())
    return absl::OkStatus();
  ASSIGN_OR_RETURN(const std::vector<TierSpec> ladder,
                   ParseTierList(version.ladder));
  const auto in_ladder = [&](const std::string& name) {
    return std::any_of(ladder.begin(), ladder.end(),
                       [&](const TierSpec& t) { return t.name == name; });
  };
  if (IsAccuracyTier(tier)) {
    // Each is a search of several evaluations: devices get the ladder's.
    if (access == TierAccess::kLadder) {
      return absl::NotFoundError(absl::StrCat(
          "tier '", tier.name, "' is not offered for ", version.model, "/",
          version.version, " (", version.ladder, "); an operator may warm it"));
    }
  } else if (!in_ladder(tier.refines)) {
    return absl::NotFoundError(absl::StrCat(
        "refinement '", tier.name, "': tier '", tier.refines,
        "' is not in the ladder of ", version.model, "/", version.version));
  }
  if (access == TierAccess::kLadder && !in_ladder(absl::StrCat("q", tier.qp))) {
    return absl::NotFoundError(absl::StrCat(
        "tier '", tier.name, "' is not offered for ", version.model, "/",
        version.version, ": refinements between two of its ladder tiers are (",
        version.ladder, "); an operator may warm others"));
  }
  ASSIGN_OR_RETURN(const std::vector<TierRecord> tiers,
                   registry_->GetTiers(version.id));
  if (tiers.size() >= options_.max_tiers) {
    return absl::ResourceExhaustedError(
        absl::StrCat(version.model, "/", version.version, " already has ",
                     tiers.size(), " tiers; this server allows at most ",
                     options_.max_tiers, " per version (--max-tiers)"));
  }
  return registry_->AddTier(version.id, tier.name);
}

absl::Status ModelStore::Warm(const std::string& model,
                              const std::string& version,
                              const std::vector<std::string>& tiers) {
  ASSIGN_OR_RETURN(const VersionRecord record,
                   registry_->GetVersion(model, version));
  for (const std::string& name : tiers) {
    if (registry_->GetTier(record.id, name).ok()) continue;
    ASSIGN_OR_RETURN(const TierSpec spec, ParseTier(name));
    RETURN_IF_ERROR(
        AddRefinementTier(record, spec, TierAccess::kAnyRefinement));
  }
  ASSIGN_OR_RETURN(const std::vector<TierRecord> ladder,
                   registry_->GetTiers(record.id));
  for (const TierRecord& tier : ladder) {
    const bool wanted = tiers.empty() || std::find(tiers.begin(), tiers.end(),
                                                   tier.tier) != tiers.end();
    if (wanted && tier.state != TierState::kReady)
      StartEncoding(record, tier.tier, /*waiting=*/false);
  }
  for (const std::string& name : tiers) {
    if (std::none_of(ladder.begin(), ladder.end(),
                     [&](const TierRecord& t) { return t.tier == name; })) {
      return absl::NotFoundError(absl::StrCat("tier '", name,
                                              "' is not in the ladder of ",
                                              model, "/", record.version));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> ModelStore::GetManifest(
    const std::string& model, const std::string& version,
    const std::string& tier_name, const absl::flat_hash_set<std::string>& held,
    TierAccess access) {
  ASSIGN_OR_RETURN(VersionRecord record, registry_->GetVersion(model, version));
  std::string tier = tier_name;
  if (tier.empty()) {
    ASSIGN_OR_RETURN(const std::vector<TierSpec> ladder,
                     ParseTierList(record.ladder));
    tier = ladder.front().name;
  }
  absl::StatusOr<TierSpec> parsed = ParseTier(tier);
  absl::StatusOr<TierRecord> known = registry_->GetTier(record.id, tier);
  if (!known.ok() && absl::IsNotFound(known.status())) {
    RETURN_IF_ERROR(
        parsed.status());  // another spelling of a tier, or none at all
    RETURN_IF_ERROR(AddRefinementTier(record, *parsed, access));
    known = registry_->GetTier(record.id, tier);
  }
  ASSIGN_OR_RETURN(TierRecord state, std::move(known));
  const TierSpec spec =
      parsed.ok()
          ? *std::move(parsed)
          : TierSpec{tier};  // a tier stored before names were canonical
  if (options_.metrics) {
    state.state == TierState::kReady ? options_.metrics->RecordCacheHit()
                                     : options_.metrics->RecordCacheMiss();
  }
  if (state.state != TierState::kReady) {
    std::shared_ptr<Encoding> encoding =
        StartEncoding(record, tier, /*waiting=*/true);
    absl::Status status;
    bool elsewhere = false;
    {
      absl::MutexLock lock(&encoding->mu);
      encoding->mu.Await(absl::Condition(&encoding->done));
      // A copy with a representation of its own: absl shares a status's message
      // between copies by a reference count in uninstrumented code, which
      // ThreadSanitizer cannot follow.
      status =
          absl::Status(encoding->status.code(), encoding->status.message());
      elsewhere = encoding->elsewhere;
    }
    if (elsewhere) status = AwaitElsewhere(record, tier);
    RETURN_IF_ERROR(status);
    ASSIGN_OR_RETURN(state, registry_->GetTier(record.id, tier));
    if (state.state != TierState::kReady)
      return absl::InternalError(
          absl::StrCat("tier '", tier, "' did not become ready"));
  }
  Manifest manifest{std::move(record), tier, {}, 0, nullptr};
  // A refinement sends the coarse tier whole first (its picture layers as base
  // entries, then the layers coded on their own), the P pictures last: the
  // client has a usable model early.
  std::vector<LayerRecord> bases, whole, deltas;
  // A base entry of a refinement carries its coarse layer's quantization
  // scheme: a client streaming an int8 coarse output sizes its scales by it.
  absl::flat_hash_map<std::string, std::string> coarse_schemes;
  if (!spec.refines.empty()) {
    if (absl::StatusOr<TierRecord> coarse =
            registry_->GetTier(manifest.version.id, spec.refines);
        coarse.ok()) {
      for (const LayerRecord& layer : coarse->layers)
        coarse_schemes[layer.blob_sha256] = layer.quant_scheme;
    }
  }
  for (size_t i = 0; i < state.layers.size(); ++i) {
    LayerRecord& layer = state.layers[i];
    layer.tensor_index = static_cast<uint32_t>(i);
    if (!layer.base_blob_sha256.empty() &&
        !held.contains(layer.base_blob_sha256)) {
      // The base travels first; its blob is kept for as long as this layer
      // refers to it.
      ASSIGN_OR_RETURN(const uint64_t bytes,
                       blobs_->Size(layer.base_blob_sha256));
      LayerRecord base{layer.name, layer.base_blob_sha256, bytes,
                       LayerCodec::kHevc};
      base.is_base = true;
      base.tensor_index = layer.tensor_index;
      if (auto scheme = coarse_schemes.find(base.blob_sha256);
          scheme != coarse_schemes.end())
        base.quant_scheme = scheme->second;
      (spec.refines.empty() ? manifest.layers : bases)
          .push_back(std::move(base));
    }
    if (spec.refines.empty()) {
      manifest.layers.push_back(std::move(layer));
    } else {
      (layer.base_blob_sha256.empty() ? whole : deltas)
          .push_back(std::move(layer));
    }
  }
  for (std::vector<LayerRecord>* part : {&bases, &whole, &deltas}) {
    for (LayerRecord& layer : *part)
      manifest.layers.push_back(std::move(layer));
  }
  for (const LayerRecord& layer : manifest.layers)
    manifest.total_bytes += layer.bytes;
  const auto key = std::make_pair(manifest.version.id, tier);
  manifest.lease = Lease(key);
  registry_->TouchTier(key.first, tier, NowSeconds()).IgnoreError();
  return manifest;
}

std::shared_ptr<void> ModelStore::Lease(
    const std::pair<int64_t, std::string>& key) {
  {
    absl::MutexLock lock(&leases_->mu);
    ++leases_->counts[key];
  }
  return std::shared_ptr<void>(nullptr, [table = leases_, key](void*) {
    absl::MutexLock lock(&table->mu);
    if (--table->counts[key] == 0) table->counts.erase(key);
  });
}

void ModelStore::EnforceCacheBudget(
    const std::pair<int64_t, std::string>& keep) {
  if (options_.cache_bytes == 0) return;
  absl::MutexLock evict_lock(&evict_mu_);
  auto tiers = registry_->ReadyTiersByLastUse();
  if (!tiers.ok()) return;
  uint64_t total = 0;
  for (const CachedTier& t : *tiers) total += t.bytes;
  const int64_t used_before =
      NowSeconds() - absl::ToInt64Seconds(options_.evict_min_idle);
  for (const CachedTier& t : *tiers) {  // least recently used first
    if (total <= options_.cache_bytes) break;
    // In use lately (maybe on another replica), and so is every later one.
    if (options_.evict_min_idle > absl::ZeroDuration() &&
        t.last_used > used_before) {
      break;
    }
    const bool pinned = t.ladder.substr(0, t.ladder.find(',')) == t.tier;
    const auto key = std::make_pair(t.version_id, t.tier);
    bool busy;
    {
      absl::MutexLock lock(&leases_->mu);
      busy = leases_->counts.contains(key);
    }
    {
      absl::MutexLock lock(&mu_);
      busy = busy || encodings_.contains(key);
    }
    if (pinned || busy || key == keep) continue;
    auto unreferenced = registry_->EvictTier(t.version_id, t.tier);
    if (!unreferenced.ok()) continue;
    for (const std::string& sha : *unreferenced)
      blobs_->Remove(sha).IgnoreError();
    total -= t.bytes;
    if (options_.metrics) options_.metrics->RecordCacheEviction();
  }
}

}  // namespace weightcast
