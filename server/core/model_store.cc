#include "server/core/model_store.h"

#include <malloc.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/pack/layer_policy.h"
#include "common/pack/packed_model.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

absl::Status CheckLabel(absl::string_view what, absl::string_view label) {
  if (label.empty() || label.size() > 64) return absl::InvalidArgumentError(absl::StrCat(what, " must be 1-64 characters"));
  for (char c : label) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return absl::InvalidArgumentError(absl::StrCat(what, " '", label, "' may hold only letters, digits, '.', '_', '-'"));
  }
  if (label == "latest") return absl::InvalidArgumentError(absl::StrCat(what, " 'latest' is reserved"));
  return absl::OkStatus();
}

absl::StatusOr<LayerPolicy> PolicyOf(const std::string& json) {
  if (json.empty()) return LayerPolicy{};
  return ParseLayerPolicy(json);
}

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct ModelStore::Encoding {
  VersionRecord version;
  TierSpec tier;
  LayerPolicy policy;
  absl::Mutex mu;
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  size_t remaining ABSL_GUARDED_BY(mu) = 0;
  std::vector<LayerRecord> layers ABSL_GUARDED_BY(mu);
  std::shared_ptr<const Model> model;  // set once by Prepare, before layer jobs start
  const EncoderPool::Urgency urgency = std::make_shared<std::atomic<bool>>(false);
};

absl::StatusOr<std::unique_ptr<ModelStore>> ModelStore::Create(const ModelStoreOptions& options) {
  RETURN_IF_ERROR(ParseTierList(options.default_ladder).status());
  std::error_code error;
  std::filesystem::create_directories(options.data_dir, error);
  if (error) return absl::UnavailableError(absl::StrCat(options.data_dir, ": ", error.message()));
  ASSIGN_OR_RETURN(std::unique_ptr<Registry> registry, Registry::Open(options.data_dir + "/registry.db"));
  ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> blobs, BlobStore::Open(options.data_dir));
  std::unique_ptr<ModelStore> store(new ModelStore(options, std::move(registry), std::move(blobs)));
  store->EnforceCacheBudget();  // the budget may have shrunk since the last run
  return store;
}

ModelStore::ModelStore(ModelStoreOptions options, std::unique_ptr<Registry> registry, std::unique_ptr<BlobStore> blobs)
    : options_(std::move(options)), registry_(std::move(registry)), blobs_(std::move(blobs)),
      pool_(std::make_unique<EncoderPool>(options_.workers)) {}

ModelStore::~ModelStore() { Shutdown(); }

void ModelStore::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  pool_->Stop();
  std::vector<std::shared_ptr<Encoding>> abandoned;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, encoding] : encodings_) abandoned.push_back(encoding);
  }
  for (const auto& encoding : abandoned) {
    registry_->SetTierState(encoding->version.id, encoding->tier.name, TierState::kNotEncoded, "").IgnoreError();
    {
      absl::MutexLock lock(&mu_);
      encodings_.erase(std::make_pair(encoding->version.id, encoding->tier.name));
    }
    absl::MutexLock lock(&encoding->mu);
    encoding->status = absl::UnavailableError("the server is shutting down");
    encoding->done = true;
  }
}

void ModelStore::Fail(const std::shared_ptr<Encoding>& encoding, absl::Status status) {
  {
    absl::MutexLock lock(&encoding->mu);
    encoding->status.Update(status);
  }
  Finish(encoding);
}

absl::StatusOr<std::string> ModelStore::DefaultLadder() {
  return registry_->GetSetting("default_ladder", options_.default_ladder);
}

absl::Status ModelStore::SetDefaultLadder(const std::string& ladder) {
  RETURN_IF_ERROR(ParseTierList(ladder).status());
  return registry_->SetSetting("default_ladder", ladder);
}

absl::StatusOr<VersionRecord> ModelStore::Register(const RegisterRequest& request, const std::string& upload_path) {
  RETURN_IF_ERROR(CheckLabel("model name", request.model));
  RETURN_IF_ERROR(CheckLabel("version label", request.version));
  std::string ladder = request.ladder;
  if (ladder.empty()) {
    ASSIGN_OR_RETURN(ladder, DefaultLadder());
  }
  ASSIGN_OR_RETURN(const std::vector<TierSpec> tiers, ParseTierList(ladder));
  ASSIGN_OR_RETURN(const LayerPolicy policy, PolicyOf(request.policy_json));
  if (registry_->GetVersion(request.model, request.version).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("model '", request.model, "' already has a version '", request.version, "'"));
  }
  ASSIGN_OR_RETURN(const Model model, ReadCheckpoint(upload_path));
  if (model.tensors.empty()) return absl::InvalidArgumentError(absl::StrCat(upload_path, ": no tensors"));

  VersionRecord record;
  record.model = request.model;
  record.version = request.version;
  record.description = request.description;
  record.ladder = ladder;
  record.policy_json = request.policy_json;
  record.created_unix_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const Tensor& t : model.tensors) {
    record.tensors.push_back({t.name, t.shape, std::string(DTypeName(t.dtype)),
                              std::string(LayerClassName(ClassifyTensor(t, policy)))});
  }
  std::error_code size_error;
  record.source_bytes = std::filesystem::file_size(upload_path, size_error);
  if (size_error) return absl::InternalError(absl::StrCat(upload_path, ": ", size_error.message()));
  ASSIGN_OR_RETURN(record.source_sha256, blobs_->Adopt(upload_path));
  std::vector<std::string> tier_names;
  for (const TierSpec& tier : tiers) tier_names.push_back(tier.name);
  absl::StatusOr<int64_t> id = registry_->AddVersion(record, tier_names);
  if (!id.ok()) {
    // Keep the blob only if another version holds the same checkpoint.
    auto unreferenced = registry_->Unreferenced({record.source_sha256});
    if (unreferenced.ok()) {
      for (const std::string& sha : *unreferenced) blobs_->Remove(sha).IgnoreError();
    }
    return id.status();
  }
  record.id = *id;
  return record;
}

absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>> ModelStore::List() {
  return registry_->ListModels();
}

absl::StatusOr<std::pair<VersionRecord, std::vector<TierRecord>>> ModelStore::Describe(const std::string& model,
                                                                                        const std::string& version) {
  ASSIGN_OR_RETURN(VersionRecord record, registry_->GetVersion(model, version));
  ASSIGN_OR_RETURN(std::vector<TierRecord> tiers, registry_->GetTiers(record.id));
  {
    absl::MutexLock lock(&mu_);
    for (TierRecord& tier : tiers) {
      if (encodings_.contains(std::make_pair(record.id, tier.tier))) tier.state = TierState::kEncoding;
    }
  }
  return std::make_pair(std::move(record), std::move(tiers));
}

absl::Status ModelStore::Delete(const std::string& model, const std::string& version) {
  ASSIGN_OR_RETURN(const VersionRecord record, registry_->GetVersion(model, version));
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, encoding] : encodings_) {
      if (key.first == record.id) {
        return absl::FailedPreconditionError(absl::StrCat("tier '", key.second, "' of ", model, "/", record.version,
                                                          " is being encoded; delete it when that is done"));
      }
    }
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> unreferenced, registry_->DeleteVersion(record.id));
  for (const std::string& sha : unreferenced) blobs_->Remove(sha).IgnoreError();
  return absl::OkStatus();
}

absl::Status ModelStore::Warm(const std::string& model, const std::string& version, const std::vector<std::string>& tiers) {
  ASSIGN_OR_RETURN(const VersionRecord record, registry_->GetVersion(model, version));
  ASSIGN_OR_RETURN(const std::vector<TierRecord> ladder, registry_->GetTiers(record.id));
  for (const TierRecord& tier : ladder) {
    const bool wanted = tiers.empty() || std::find(tiers.begin(), tiers.end(), tier.tier) != tiers.end();
    if (wanted && tier.state != TierState::kReady) StartEncoding(record, tier.tier, /*waiting=*/false);
  }
  for (const std::string& name : tiers) {
    if (std::none_of(ladder.begin(), ladder.end(), [&](const TierRecord& t) { return t.tier == name; })) {
      return absl::NotFoundError(absl::StrCat("tier '", name, "' is not in the ladder of ", model, "/", record.version));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> ModelStore::GetManifest(const std::string& model, const std::string& version,
                                                  const std::string& tier_name) {
  ASSIGN_OR_RETURN(VersionRecord record, registry_->GetVersion(model, version));
  std::string tier = tier_name;
  if (tier.empty()) {
    ASSIGN_OR_RETURN(const std::vector<TierSpec> ladder, ParseTierList(record.ladder));
    tier = ladder.front().name;
  }
  ASSIGN_OR_RETURN(TierRecord state, registry_->GetTier(record.id, tier));
  if (options_.metrics) {
    state.state == TierState::kReady ? options_.metrics->RecordCacheHit() : options_.metrics->RecordCacheMiss();
  }
  if (state.state != TierState::kReady) {
    std::shared_ptr<Encoding> encoding = StartEncoding(record, tier, /*waiting=*/true);
    absl::Status status;
    {
      absl::MutexLock lock(&encoding->mu);
      encoding->mu.Await(absl::Condition(&encoding->done));
      status = encoding->status;
    }
    RETURN_IF_ERROR(status);
    ASSIGN_OR_RETURN(state, registry_->GetTier(record.id, tier));
    if (state.state != TierState::kReady) return absl::InternalError(absl::StrCat("tier '", tier, "' did not become ready"));
  }
  Manifest manifest{std::move(record), tier, std::move(state.layers), 0, nullptr};
  for (const LayerRecord& layer : manifest.layers) manifest.total_bytes += layer.bytes;
  const auto key = std::make_pair(manifest.version.id, tier);
  {
    absl::MutexLock lock(&leases_->mu);
    ++leases_->counts[key];
  }
  manifest.lease = std::shared_ptr<void>(nullptr, [table = leases_, key](void*) {
    absl::MutexLock lock(&table->mu);
    if (--table->counts[key] == 0) table->counts.erase(key);
  });
  registry_->TouchTier(key.first, tier, NowSeconds()).IgnoreError();
  return manifest;
}

std::shared_ptr<ModelStore::Encoding> ModelStore::StartEncoding(const VersionRecord& version, const std::string& tier,
                                                                bool waiting) {
  std::shared_ptr<Encoding> encoding;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      encoding = std::make_shared<Encoding>();
      absl::MutexLock encoding_lock(&encoding->mu);
      encoding->status = absl::UnavailableError("the server is shutting down");
      encoding->done = true;
      return encoding;
    }
    auto [it, inserted] = encodings_.try_emplace(std::make_pair(version.id, tier));
    if (!inserted) {  // someone started it: wait on that work, urgently if we wait
      if (waiting) it->second->urgency->store(true);
      return it->second;
    }
    it->second = std::make_shared<Encoding>();
    encoding = it->second;
    encoding->version = version;
    encoding->tier.name = tier;
    encoding->urgency->store(waiting);
  }
  auto spec = ParseTier(tier);
  absl::Status status = spec.status();
  if (status.ok()) encoding->tier = *spec;
  auto policy = PolicyOf(version.policy_json);
  if (status.ok() && !policy.ok()) status = policy.status();
  if (status.ok()) {
    encoding->policy = *policy;
    status = registry_->SetTierState(version.id, tier, TierState::kEncoding, "");
  }
  if (!status.ok()) {
    Fail(encoding, status);
    return encoding;
  }
  if (!pool_->Submit(encoding->urgency, [this, encoding] { Prepare(encoding); })) {
    Fail(encoding, absl::UnavailableError("the server is shutting down"));
  }
  return encoding;
}

void ModelStore::Prepare(std::shared_ptr<Encoding> encoding) {
  auto model = ReadCheckpoint(blobs_->PathOf(encoding->version.source_sha256));
  if (!model.ok() || model->tensors.size() != encoding->version.tensors.size()) {
    Fail(encoding, model.ok() ? absl::DataLossError("stored checkpoint no longer matches its registration")
                              : absl::DataLossError(absl::StrCat("stored checkpoint: ", model.status().message())));
    return;
  }
  encoding->model = std::make_shared<const Model>(*std::move(model));
  const size_t count = encoding->model->tensors.size();
  {
    absl::MutexLock lock(&encoding->mu);
    encoding->remaining = count;
    encoding->layers.resize(count);
  }
  for (size_t i = 0; i < count; ++i) {
    // A job refused at shutdown never runs; Shutdown() releases the waiters.
    pool_->Submit(encoding->urgency, [this, encoding, i] {
      const Tensor& tensor = encoding->model->tensors[i];
      LayerEncodeOptions base;
      base.hevc.preset = options_.x265_preset;
      base.threads = 1;  // the pool is the parallelism
      const LayerEncodeOptions options = OptionsFor(tensor, encoding->policy, encoding->tier, base);
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<LayerRecord> record = [&]() -> absl::StatusOr<LayerRecord> {
        ASSIGN_OR_RETURN(const PackedLayer layer, EncodeLayer(tensor, options));
        if (options_.metrics) {
          options_.metrics->RecordTilesEncoded(encoding->tier.name, static_cast<int64_t>(layer.tiles.size()));
          options_.metrics->RecordLayerEncode(
              encoding->tier.name, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
        ASSIGN_OR_RETURN(std::string sha, blobs_->Put(bytes));
        return LayerRecord{layer.name, std::move(sha), bytes.size(), LayerCodecProtoNumber(layer.codec),
                           std::string(layer.decoded_sha256.begin(), layer.decoded_sha256.end()),
                           layer.fidelity.bits_per_weight, layer.fidelity.sqnr_db,
                           ClassifyTensor(tensor, encoding->policy) == LayerClass::kPicture};
      }();
      layers_encoded_.fetch_add(1);
      bool last = false;
      {
        absl::MutexLock lock(&encoding->mu);
        if (record.ok()) {
          encoding->layers[i] = *std::move(record);
        } else {
          encoding->status.Update(record.status());
        }
        last = --encoding->remaining == 0;
      }
      if (last) Finish(encoding);
    });
  }
}

void ModelStore::Finish(const std::shared_ptr<Encoding>& encoding) {
  absl::Status status;
  std::vector<LayerRecord> layers;
  {
    absl::MutexLock lock(&encoding->mu);
    status = encoding->status;
    layers = encoding->layers;
  }
  const int64_t id = encoding->version.id;
  const std::string tier = encoding->tier.name;
  if (status.ok()) status = registry_->CompleteTier(id, tier, layers);
  if (status.ok()) registry_->TouchTier(id, tier, NowSeconds()).IgnoreError();
  if (!status.ok()) registry_->SetTierState(id, tier, TierState::kFailed, std::string(status.message())).IgnoreError();
  encoding->model.reset();
  malloc_trim(0);  // hand the checkpoint's pages back to the kernel (glibc keeps freed arenas)
  {
    absl::MutexLock lock(&mu_);
    auto it = encodings_.find(std::make_pair(id, tier));
    if (it != encodings_.end() && it->second == encoding) encodings_.erase(it);
  }
  // Evict before waking the waiters, so that whoever sees this tier also sees the cache within
  // its budget.
  if (status.ok()) EnforceCacheBudget({id, tier});
  absl::MutexLock lock(&encoding->mu);
  encoding->status = status;
  encoding->done = true;
}

void ModelStore::EnforceCacheBudget(const std::pair<int64_t, std::string>& keep) {
  if (options_.cache_bytes == 0) return;
  absl::MutexLock evict_lock(&evict_mu_);
  auto tiers = registry_->ReadyTiersByLastUse();
  if (!tiers.ok()) return;
  uint64_t total = 0;
  for (const CachedTier& t : *tiers) total += t.bytes;
  for (const CachedTier& t : *tiers) {  // least recently used first
    if (total <= options_.cache_bytes) break;
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
    for (const std::string& sha : *unreferenced) blobs_->Remove(sha).IgnoreError();
    total -= t.bytes;
    if (options_.metrics) options_.metrics->RecordCacheEviction();
  }
}

}  // namespace weightcast
