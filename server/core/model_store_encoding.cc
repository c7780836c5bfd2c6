// ModelStore's encoding and evaluation: tiers encoded on the pool (a job per
// layer, which reads its tensor from the stored checkpoint and offers its tiles
// to idle workers; budget tiers
// measure first; delta tiers start when their base tier is encoded),
// completion, and accuracy measurement of encoded tiers.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint_source.h"
#include "common/eval/evaluator.h"
#include "common/pack/delta_codec.h"
#include "common/pack/packed_model.h"
#include "server/core/model_store.h"

namespace weightcast {
namespace {

// Tiers whose picture layers may be deltas on a base version's: one lossy HEVC
// QP for all.
bool IsDeltaTier(const TierSpec& tier) {
  return tier.picture_codec == LayerCodec::kHevc && !tier.lossless &&
         tier.budget_bytes == 0 && tier.refines.empty() &&
         !IsAccuracyTier(tier);
}

// What the P pictures of a tier's picture layers are predicted from: the same
// version's coarser tier (a refinement), or the base version's layers at the
// same tier (a version delta).
struct DeltaBase {
  std::string version;
  std::string tier;
};
std::optional<DeltaBase> DeltaBaseOf(const VersionRecord& version,
                                     const TierSpec& tier) {
  if (!tier.refines.empty()) return DeltaBase{version.version, tier.refines};
  if (!version.base_version.empty() && IsDeltaTier(tier))
    return DeltaBase{version.base_version, tier.name};
  return std::nullopt;
}

// Tensor `index` of `source` for the layer encoder: read whole only if the
// coding needs it whole, otherwise a chunk of rows at a time.
LayerEncoder::Source SourceOf(const CheckpointSource& source, size_t index) {
  return {source.headers()[index],
          [&source, index] { return source.Read(index); },
          [&source, index](int64_t first_row,
                           int64_t rows) -> absl::StatusOr<std::vector<float>> {
            ASSIGN_OR_RETURN(const Tensor chunk,
                             source.ReadRows(index, first_row, rows));
            return ToFloat32(chunk);
          }};
}

}  // namespace

void ModelStore::SpreadTiles(const std::shared_ptr<Encoding>& encoding,
                             LayerEncodeOptions* options) {
  options->tile_helpers = pool_->workers() - 1;
  options->cancelled = [this] { return cancelling_.load(); };
  options->tile_spawner =
      [this, urgency = encoding->urgency](std::function<void()> task) {
        pool_->Submit(urgency, std::move(task), /*first=*/true);
      };
}

void ModelStore::Fail(const std::shared_ptr<Encoding>& encoding,
                      absl::Status status) {
  {
    absl::MutexLock lock(&encoding->mu);
    encoding->status.Update(status);
  }
  Finish(encoding);
}

std::shared_ptr<ModelStore::Encoding> ModelStore::StartEncoding(
    const VersionRecord& version, const std::string& tier, bool waiting) {
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
    auto [it, inserted] =
        encodings_.try_emplace(std::make_pair(version.id, tier));
    if (!inserted) {  // someone started it: wait on that work, urgently if we
                      // wait
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
  auto policy = ParseLayerPolicy(version.policy_json);
  if (status.ok() && !policy.ok()) status = policy.status();
  if (status.ok() && encode_leases_ != nullptr) {
    absl::StatusOr<bool> acquired =
        encode_leases_->TryAcquire(version.id, tier);
    if (acquired.ok() && !*acquired) {  // another replica encodes it
      {
        absl::MutexLock lock(&mu_);
        auto it = encodings_.find(std::make_pair(version.id, tier));
        if (it != encodings_.end() && it->second == encoding)
          encodings_.erase(it);
      }
      std::vector<std::function<void()>> then;
      {
        absl::MutexLock lock(&encoding->mu);
        encoding->status = absl::AbortedError(absl::StrCat(
            "tier ", tier, " is being encoded by another replica"));
        encoding->elsewhere = true;
        encoding->done = true;
        then.swap(encoding->then);
      }
      for (auto& next : then) next();
      return encoding;
    }
    status = acquired.status();
  }
  if (status.ok()) {
    encoding->policy = *policy;
    status =
        registry_->SetTierState(version.id, tier, TierState::kEncoding, "");
  }
  if (!status.ok()) {
    Fail(encoding, status);
    return encoding;
  }
  auto start = [this, encoding] {
    if (!pool_->Submit(encoding->urgency,
                       [this, encoding] { Prepare(encoding); })) {
      Fail(encoding, absl::UnavailableError("the server is shutting down"));
    }
  };
  // A delta or refinement tier starts once its base tier is encoded (never
  // blocking a worker).
  if (const std::optional<DeltaBase> base_of =
          DeltaBaseOf(version, encoding->tier)) {
    auto base = registry_->GetVersion(version.model, base_of->version);
    auto base_tier =
        base.ok() ? registry_->GetTier(base->id, base_of->tier) : base.status();
    if (base_tier.ok() && base_tier->state != TierState::kReady) {
      std::shared_ptr<Encoding> base_encoding =
          StartEncoding(*base, base_of->tier, waiting);
      absl::MutexLock lock(&base_encoding->mu);
      if (!base_encoding->done) {
        base_encoding->then.push_back(std::move(start));
        return encoding;
      }
    }
  }
  start();
  return encoding;
}

void ModelStore::Prepare(std::shared_ptr<Encoding> encoding) {
  // Only the headers now: each layer job reads its own tensor.
  auto source =
      CheckpointSource::Open(blobs_->PathOf(encoding->version.source_sha256));
  if (!source.ok() || (*source)->size() != encoding->version.tensors.size()) {
    Fail(encoding,
         source.ok()
             ? absl::DataLossError(
                   "stored checkpoint no longer matches its registration")
             : absl::DataLossError(absl::StrCat("stored checkpoint: ",
                                                source.status().message())));
    return;
  }
  encoding->source = *std::move(source);
  if (DeltaBaseOf(encoding->version, encoding->tier) &&
      !PrepareBase(encoding)) {
    encoding->base_source.reset();
    encoding->base_layers.clear();
    encoding->base_lease.reset();
  }
  if (IsAccuracyTier(encoding->tier)) {
    if (std::optional<AccuracyChoice> choice =
            SearchedChoice(encoding->version, encoding->tier.name)) {
      EncodeSearchedTier(encoding, *std::move(choice));  // searched before
    } else {
      MeasureForBudget(encoding);  // then EncodeAccuracyTier
    }
  } else if (encoding->tier.budget_bytes > 0) {
    MeasureForBudget(encoding);
  } else {
    EncodeLayers(encoding, {});
  }
}

bool ModelStore::PrepareBase(const std::shared_ptr<Encoding>& encoding) {
  const std::optional<DeltaBase> base_of =
      DeltaBaseOf(encoding->version, encoding->tier);
  auto base = registry_->GetVersion(encoding->version.model, base_of->version);
  if (!base.ok()) return false;  // deleted: the layers are coded on their own
  encoding->base_lease = Lease({base->id, base_of->tier});
  auto tier = registry_->GetTier(base->id, base_of->tier);
  if (!tier.ok() || tier->state != TierState::kReady ||
      tier->layers.size() != encoding->source->size()) {
    return false;
  }
  if (base->id == encoding->version.id) {  // a refinement: the same checkpoint
    encoding->base_source = encoding->source;
  } else {
    auto source = CheckpointSource::Open(blobs_->PathOf(base->source_sha256));
    if (!source.ok() || (*source)->size() != encoding->source->size())
      return false;
    encoding->base_source = *std::move(source);
  }
  encoding->base_layers = std::move(tier->layers);
  return true;
}

absl::StatusOr<LayerRecord> ModelStore::EncodeLayerRecord(
    const std::shared_ptr<Encoding>& encoding, size_t index, int qp) {
  const Tensor& header = encoding->source->headers()[index];
  if (!encoding->tier.refines.empty() && index < encoding->base_layers.size()) {
    // A refinement keeps a coarse layer that is already as fine as the tier (a
    // budget tier's).
    const LayerRecord& coarse = encoding->base_layers[index];
    if (coarse.name == header.name && coarse.qp > 0 &&
        coarse.qp <= encoding->tier.qp && coarse.base_blob_sha256.empty() &&
        FollowsTierQp(header, encoding->policy, encoding->tier)) {
      return coarse;
    }
  }
  // This job's tensor only, a chunk of rows at a time where the coding allows:
  // memory follows the workers, not the model.
  const Tensor& tensor = header;
  LayerEncodeOptions base_options;
  base_options.hevc.preset = options_.x265_preset;
  base_options.threads = 1;  // the pool is the parallelism
  SpreadTiles(encoding, &base_options);
  TierSpec tier = encoding->tier;
  if (qp > 0) tier.qp = qp;
  LayerEncodeOptions options =
      OptionsFor(tensor, encoding->policy, tier, base_options);
  WeighColumns(tensor, encoding->input_rms, &options);
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const PackedLayer layer,
                   options_.layer_encoder->EncodeSource(
                       SourceOf(*encoding->source, index), options));
  if (options_.metrics) {
    options_.metrics->RecordTilesEncoded(
        encoding->tier.name, static_cast<int64_t>(layer.tiles.size()));
    options_.metrics->RecordLayerEncode(
        encoding->tier.name,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  const bool lossy_hevc =
      options.codec == LayerCodec::kHevc && !options.hevc.lossless;
  const bool picture =
      ClassifyTensor(tensor, encoding->policy) == LayerClass::kPicture;
  LayerRecord record{
      layer.name,
      "",
      bytes.size(),
      layer.codec,
      std::string(layer.decoded_sha256.begin(), layer.decoded_sha256.end()),
      layer.fidelity.bits_per_weight,
      layer.fidelity.sqnr_db,
      picture,
      lossy_hevc ? options.hevc.qp : 0};
  if (IsInt8Codec(layer.codec))
    record.quant_scheme =
        absl::StrCat(QuantSchemeName(layer.scheme),
                     layer.outliers.empty() ? "" : "+outliers",
                     layer.column_scales.empty() ? "" : "+cols",
                     layer.mosaic.empty() ? "" : "+mosaic");
  // A delta on the base layer (the base version's at this tier, or in a
  // refinement the coarse tier's) when one keeps the tier's fidelity in fewer
  // bytes than the layer coded on its own. A refinement layer coded on its own
  // still names the coarse layer, which is sent first.
  if (lossy_hevc && encoding->base_source &&
      index < encoding->base_layers.size()) {
    const LayerRecord& base = encoding->base_layers[index];
    auto base_bytes = ReadFileBytes(blobs_->PathOf(base.blob_sha256));
    size_t consumed = 0;
    auto base_layer = base_bytes.ok() ? ParsePackedLayer(*base_bytes, &consumed)
                                      : base_bytes.status();
    const bool refinement = !tier.refines.empty();
    const bool usable =
        base.name == tensor.name && base_layer.ok() &&
        base_layer->codec == LayerCodec::kHevc &&
        (refinement ? FollowsTierQp(tensor, encoding->policy, tier) &&
                          base_layer->qp > tier.qp
                    : base_layer->qp == options.hevc.qp);
    if (usable) {
      // A refinement's base is this very tensor. Both are read a chunk of
      // rows at a time.
      ASSIGN_OR_RETURN(
          const std::optional<PackedLayer> delta,
          options_.layer_encoder->EncodeDeltaSource(
              *base_layer, SourceOf(*encoding->base_source, index),
              SourceOf(*encoding->source, index), layer.fidelity.sqnr_db,
              bytes.size(), refinement ? tier.qp - base_layer->qp : 0));
      if (!delta && refinement) record.base_blob_sha256 = base.blob_sha256;
      if (delta) {
        std::vector<uint8_t> delta_bytes = SerializePackedLayer(*delta);
        record = LayerRecord{delta->name,
                             "",
                             delta_bytes.size(),
                             LayerCodec::kHevcDelta,
                             std::string(delta->decoded_sha256.begin(),
                                         delta->decoded_sha256.end()),
                             delta->fidelity.bits_per_weight,
                             delta->fidelity.sqnr_db,
                             picture,
                             delta->qp,
                             base.blob_sha256,
                             std::string(QuantSchemeName(delta->scheme))};
        bytes = std::move(delta_bytes);
      }
    }
  }
  ASSIGN_OR_RETURN(record.blob_sha256, blobs_->Put(bytes));
  return record;
}

void ModelStore::MeasureForBudget(const std::shared_ptr<Encoding>& encoding) {
  std::shared_ptr<const RateCurves> known;
  {
    absl::MutexLock lock(&mu_);
    auto it =
        rate_curves_.find({encoding->version.id, encoding->tier.float_codec});
    if (it != rate_curves_.end()) known = it->second;
  }
  const size_t count = encoding->source->size();
  // One job per (layer, grid QP), so the points of one large layer's curve are
  // encoded on every worker at once; layers whose coding does not follow the
  // tier's QP are one job each (their fixed bytes).
  std::vector<std::pair<size_t, int>> jobs;  // (tensor, qp or 0 for fixed)
  if (!known) {
    for (size_t i = 0; i < count; ++i) {
      if (!FollowsTierQp(encoding->source->headers()[i], encoding->policy,
                         encoding->tier)) {
        jobs.emplace_back(i, 0);
        continue;
      }
      for (int qp : options_.rate_qps) jobs.emplace_back(i, qp);
    }
  }
  {
    absl::MutexLock lock(&encoding->mu);
    if (known) {
      encoding->curves = known->curves;
      encoding->fixed_bytes = known->fixed_bytes;
    } else {
      encoding->curves.assign(count, {});
      encoding->fixed_bytes.assign(count, 0);
    }
    encoding->remaining = jobs.size();
  }
  if (known) {
    AllocateAndEncode(encoding);
    return;
  }
  for (const auto& [i, qp] : jobs) {
    pool_->Submit(encoding->urgency, [this, encoding, i = i, qp = qp] {
      LayerEncodeOptions base;
      base.hevc.preset = options_.x265_preset;
      base.threads = 1;
      SpreadTiles(encoding, &base);
      const Tensor& tensor = encoding->source->headers()[i];
      TierSpec at = encoding->tier;
      if (qp > 0) at.qp = qp;
      bool failed;
      {
        absl::MutexLock lock(&encoding->mu);
        failed = !encoding->status.ok();
      }
      // Reads a chunk of rows at a time where the coding allows; nothing once
      // another point has failed (the tier fails with its error).
      absl::StatusOr<PackedLayer> layer =
          failed ? absl::StatusOr<PackedLayer>(absl::CancelledError())
                 : options_.layer_encoder->EncodeSource(
                       SourceOf(*encoding->source, i),
                       OptionsFor(tensor, encoding->policy, at, base));
      const uint64_t bytes =
          layer.ok() ? SerializePackedLayer(*layer).size() : 0;
      // An accuracy tier's search runs its candidates from these points.
      if (layer.ok() && IsAccuracyTier(encoding->tier))
        KeepDecoded(*encoding, i, qp, *layer, bytes);
      bool last;
      {
        absl::MutexLock lock(&encoding->mu);
        encoding->status.Update(layer.status());
        if (layer.ok()) {
          if (qp > 0) {
            encoding->curves[i].name = tensor.name;
            encoding->curves[i].points.push_back(
                {qp, bytes, layer->fidelity.sqnr_db});
          } else {
            encoding->fixed_bytes[i] = bytes;
          }
        }
        last = --encoding->remaining == 0;
      }
      if (!last) return;
      std::shared_ptr<const RateCurves> measured;
      {
        absl::MutexLock lock(&encoding->mu);
        if (encoding->status.ok()) {
          for (LayerRateCurve& curve : encoding->curves) {  // the grid's order
            std::sort(curve.points.begin(), curve.points.end(),
                      [](const RatePoint& a, const RatePoint& b) {
                        return a.qp > b.qp;
                      });
          }
          measured = std::make_shared<const RateCurves>(
              RateCurves{encoding->curves, encoding->fixed_bytes});
        }
      }
      if (!measured) {
        Finish(encoding);
        return;
      }
      {
        absl::MutexLock lock(&mu_);
        rate_curves_[{encoding->version.id, encoding->tier.float_codec}] =
            std::move(measured);
      }
      AllocateAndEncode(encoding);
    });
  }
}

void ModelStore::KeepDecoded(const Encoding& encoding, size_t index, int qp,
                             const PackedLayer& layer, uint64_t bytes) {
  absl::StatusOr<Model> one = UnpackModel({layer}, /*threads=*/1);
  if (!one.ok() || one->tensors.size() != 1) return;  // the search tries again
  auto decoded = std::make_shared<const DecodedLayer>(
      DecodedLayer{std::move(one->tensors[0]), bytes, layer.fidelity.sqnr_db});
  const uint64_t size = decoded->tensor.data.size();
  decoded_layers_.Put(DecodedLayerKey(encoding.version, encoding.tier, index,
                                      qp, /*columns=*/false),
                      std::move(decoded), size);
}

ModelStore::MeasuredCurves ModelStore::CurvesOf(Encoding& encoding) {
  MeasuredCurves measured;
  absl::MutexLock lock(&encoding.mu);
  for (size_t i = 0; i < encoding.curves.size(); ++i) {
    measured.fixed += encoding.fixed_bytes[i];
    if (encoding.curves[i].points.empty()) continue;
    measured.curves.push_back(encoding.curves[i]);
    measured.tensor_of.push_back(i);
  }
  return measured;
}

void ModelStore::AllocateAndEncode(const std::shared_ptr<Encoding>& encoding) {
  if (IsAccuracyTier(encoding->tier)) {
    EncodeAccuracyTier(encoding);
    return;
  }
  MeasuredCurves measured = CurvesOf(*encoding);
  std::vector<LayerRateCurve>& curves = measured.curves;
  const std::vector<size_t>& tensor_of = measured.tensor_of;
  const uint64_t fixed = measured.fixed;
  absl::StatusOr<Allocation> allocation =
      AllocateBudget(curves, fixed, encoding->tier.budget_bytes);
  if (!allocation.ok()) {
    Fail(encoding, allocation.status());
    return;
  }
  std::vector<int> qps(encoding->source->size(), 0);
  for (size_t c = 0; c < curves.size(); ++c)
    qps[tensor_of[c]] = allocation->qp[c];
  EncodeLayers(encoding, std::move(qps));
}

void ModelStore::EncodeLayers(const std::shared_ptr<Encoding>& encoding,
                              std::vector<int> qps) {
  const size_t count = encoding->source->size();
  {
    absl::MutexLock lock(&encoding->mu);
    encoding->remaining = count;
    encoding->layers.resize(count);
  }
  for (size_t i = 0; i < count; ++i) {
    // A job refused at shutdown never runs; Shutdown() releases the waiters.
    pool_->Submit(encoding->urgency, [this, encoding, i,
                                      qp = qps.empty() ? 0 : qps[i]] {
      absl::StatusOr<LayerRecord> record = EncodeLayerRecord(encoding, i, qp);
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
    status = absl::Status(
        encoding->status.code(),
        encoding->status.message());  // not shared: see GetManifest
    layers = encoding->layers;
  }
  const int64_t id = encoding->version.id;
  const std::string tier = encoding->tier.name;
  if (status.ok()) status = registry_->CompleteTier(id, tier, layers);
  if (status.ok()) registry_->TouchTier(id, tier, NowSeconds()).IgnoreError();
  // Cancelled by a shutdown: not a failure, encoded again on demand.
  if (!status.ok())
    registry_
        ->SetTierState(id, tier,
                       absl::IsCancelled(status) ? TierState::kNotEncoded
                                                 : TierState::kFailed,
                       absl::IsCancelled(status)
                           ? std::string()
                           : std::string(status.message()))
        .IgnoreError();
  if (encode_leases_ != nullptr) encode_leases_->Release(id, tier);
  encoding->source.reset();
  encoding->base_source.reset();
  encoding->base_lease.reset();
  malloc_trim(0);  // hand the checkpoint's pages back to the kernel (glibc
                   // keeps freed arenas)
  {
    absl::MutexLock lock(&mu_);
    auto it = encodings_.find(std::make_pair(id, tier));
    if (it != encodings_.end() && it->second == encoding) encodings_.erase(it);
  }
  // Evict before waking the waiters, so that whoever sees this tier also sees
  // the cache within its budget.
  if (status.ok()) EnforceCacheBudget({id, tier});
  if (status.ok() && encoding->version.has_eval_bundle()) {
    StartEvaluation(encoding->version.model, encoding->version.version, tier);
  }
  std::vector<std::function<void()>> then;
  {
    absl::MutexLock lock(&encoding->mu);
    // A shutdown's cancel reaches waiters as UNAVAILABLE (try again, maybe on
    // another replica), as it does for the encodings Shutdown abandons.
    encoding->status =
        absl::IsCancelled(status)
            ? absl::UnavailableError("the server is shutting down")
            : status;
    encoding->done = true;
    then.swap(encoding->then);
  }
  for (auto& next : then) next();
}

void ModelStore::StartEvaluation(const std::string& model,
                                 const std::string& version,
                                 const std::string& tier) {
  auto record = registry_->GetVersion(model, version);
  if (!record.ok()) return;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || !evaluating_.insert({record->id, tier}).second) return;
  }
  static const EncoderPool::Urgency kBackground =
      std::make_shared<std::atomic<bool>>(false);
  if (!pool_->Submit(kBackground,
                     [this, id = record->id, model, version, tier] {
                       Evaluate(id, model, version, tier);
                     })) {
    absl::MutexLock lock(&mu_);
    evaluating_.erase({record->id, tier});
  }
}

void ModelStore::Evaluate(int64_t id, const std::string& model,
                          const std::string& version, const std::string& tier) {
  const absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(const VersionRecord record,
                     registry_->GetVersion(model, version));
    if (record.id != id)
      return absl::OkStatus();  // deleted and registered again meanwhile
    const std::shared_ptr<void> lease = Lease({record.id, tier});
    ASSIGN_OR_RETURN(const TierRecord encoded,
                     registry_->GetTier(record.id, tier));
    if (encoded.state != TierState::kReady)
      return absl::OkStatus();  // evicted: measured when encoded again
    std::vector<PackedLayer> layers;
    const BaseLookup bases = [this](const Sha256Digest& sha) {
      return ReadFileBytes(blobs_->PathOf(DigestToHex(sha)));
    };
    for (const LayerRecord& layer : encoded.layers) {
      ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes,
                       ReadFileBytes(blobs_->PathOf(layer.blob_sha256)));
      size_t consumed = 0;
      ASSIGN_OR_RETURN(PackedLayer packed, ParsePackedLayer(bytes, &consumed));
      layers.push_back(std::move(packed));
    }
    absl::StatusOr<Accuracy> accuracy = [&]() -> absl::StatusOr<Accuracy> {
      ASSIGN_OR_RETURN(const Model weights,
                       UnpackModel(layers, /*threads=*/1, bases));
      layers.clear();
      ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                       LoadEvaluator(record));
      RETURN_IF_ERROR(SetReferenceOf(record, *evaluator));  // for the cosine
      if (options_.metrics) options_.metrics->RecordAccuracyEvaluation(tier);
      return evaluator->Evaluate(weights);
    }();
    // Cancelled by a shutdown: nothing to record, measured after the restart.
    if (absl::IsCancelled(accuracy.status())) return accuracy.status();
    if (!accuracy.ok()) {
      // The tier stays READY, with the reason its accuracy is missing (a pull
      // by accuracy stops waiting for it); a restart measures it again.
      const std::string message =
          NameBundleFiles(record, accuracy.status().message());
      registry_
          ->SetTierState(record.id, tier, TierState::kReady,
                         absl::StrCat("accuracy not measured: ", message))
          .IgnoreError();
      return accuracy.status();
    }
    RETURN_IF_ERROR(registry_->SetTierAccuracy(record.id, tier, *accuracy));
    if (!encoded.error.empty()) {  // measured now
      RETURN_IF_ERROR(
          registry_->SetTierState(record.id, tier, TierState::kReady, ""));
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    std::fprintf(stderr, "weightcastd: accuracy of %s/%s tier %s: %s\n",
                 model.c_str(), version.c_str(), tier.c_str(),
                 std::string(status.message()).c_str());
  }
  malloc_trim(0);
  absl::MutexLock lock(&mu_);
  evaluating_.erase({id, tier});
}

absl::Status ModelStore::AwaitElsewhere(const VersionRecord& record,
                                        const std::string& tier) {
  // Bounded: a day of polling (a live encoder renews its lease; a dead one's
  // expires and this replica takes over, so a wait ends long before).
  for (int round = 0; round < 24 * 3600 * 5; ++round) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_)
        return absl::UnavailableError("the server is shutting down");
    }
    absl::SleepFor(absl::Milliseconds(200));
    ASSIGN_OR_RETURN(const TierRecord state,
                     registry_->GetTier(record.id, tier));
    if (state.state == TierState::kReady) return absl::OkStatus();
    // Not ready: take the lease over if it expired (or the other replica
    // gave up), else wait on.
    std::shared_ptr<Encoding> encoding =
        StartEncoding(record, tier, /*waiting=*/true);
    absl::MutexLock lock(&encoding->mu);
    encoding->mu.Await(absl::Condition(&encoding->done));
    if (!encoding->elsewhere) {
      return absl::Status(encoding->status.code(), encoding->status.message());
    }
  }
  return absl::DeadlineExceededError(
      absl::StrCat("tier ", tier,
                   " was still being encoded by another replica after a day"));
}

}  // namespace weightcast
