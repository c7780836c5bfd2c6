// ModelStore's accuracy tiers ("acc-0.5", "cos-0.99"): after the version's
// rate curves (the budget tiers' measurement), the search of
// accuracy_search.h over QP allocations, each candidate decoded and run by the
// real evaluator on the version's bundle; then, when the bundle measures
// layers worth weighing (Evaluator::InputRmsToWeigh), the same search again
// with those layers coded with column scales from their inputs' RMS, on rate
// curves measured so. The smaller of the two choices that meet the tier's
// top-1 drop (or output cosine) is encoded like a budget tier. The chosen QPs
// (and whether columns are weighed) are kept in the registry, so that the
// tier evicted (or lost to a restart mid-encoding) is encoded again without
// searching again.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/status_macros.h"
#include "common/eval/evaluator.h"
#include "common/pack/packed_model.h"
#include "common/pack/rate_allocation.h"
#include "common/tensor/fidelity.h"
#include "server/core/model_store.h"

namespace weightcast {
namespace {

// Ends a kept choice whose columns are weighed.
constexpr char kColumnsSuffix[] = ";columns";

// Where the QPs an accuracy search chose are kept: the version's id,
// checkpoint and evaluation data (an id a deleted version had may be given
// again), and the tier.
std::string SearchKey(const VersionRecord& version, const std::string& tier) {
  return absl::StrCat("accuracy-search/", version.id, "/",
                      version.source_sha256, "/", version.eval_data_sha256, "/",
                      tier);
}

// The stored choice, if its QPs are one per tensor and each 0 (the tier's
// fixed coding) or a QP of the budget grid: "qp,qp,..." with ";columns" when
// the picture layers were weighed.
std::optional<AccuracyChoice> ParseChoice(absl::string_view text,
                                          size_t tensors) {
  AccuracyChoice choice;
  choice.columns = absl::ConsumeSuffix(&text, kColumnsSuffix);
  if (text.empty()) return std::nullopt;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int qp = 0;
    if (!absl::SimpleAtoi(part, &qp) || qp < 0 || qp > 51 ||
        choice.qps.size() == tensors) {
      return std::nullopt;
    }
    choice.qps.push_back(qp);
  }
  if (choice.qps.size() != tensors) return std::nullopt;
  return choice;
}

}  // namespace

std::string ModelStore::DecodedLayerKey(const VersionRecord& version,
                                        const TierSpec& tier, size_t index,
                                        int qp, bool columns) {
  return absl::StrCat(version.id, "/", version.source_sha256, "/",
                      version.eval_module_sha256, "/", version.eval_data_sha256,
                      "/", static_cast<int>(tier.float_codec), "/", index, "/",
                      qp, columns ? "/columns" : "");
}

absl::StatusOr<AccuracyChoice> ModelStore::SearchAccuracy(
    const std::shared_ptr<Encoding>& encoding) {
  const VersionRecord& version = encoding->version;
  const TierSpec& tier = encoding->tier;
  // acc-X measures top-1 against the float model's; cos-C the outputs' mean
  // cosine with the float model's (its reference outputs computed once here).
  const bool by_cosine = tier.min_cosine_ten_thousandths >= 0;
  if (!version.has_eval_bundle() || !version.reference_accuracy ||
      (!by_cosine && !version.reference_accuracy->labelled)) {
    return absl::FailedPreconditionError(
        absl::StrCat("tier '", tier.name, "' needs an evaluation bundle",
                     by_cosine ? "" : " with labels", "; ", version.model, "/",
                     version.version, " has none"));
  }
  const double reference = by_cosine ? 1.0 : version.reference_accuracy->top1;
  const double target = by_cosine
                            ? tier.min_cosine_ten_thousandths / 10000.0
                            : reference - tier.max_top1_drop_hundredths / 100.0;
  const char* const measure_name = by_cosine ? "output cosine" : "top-1";
  const size_t count = encoding->source->size();
  const MeasuredCurves measured = CurvesOf(*encoding);
  if (measured.curves.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tier '", tier.name, "': ", version.model, "/", version.version,
        " has no picture layers whose QP could be chosen"));
  }
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                   LoadEvaluator(version));
  // The float model's outputs: cos-C's measure, and every search's sensitivity
  // probes'.
  RETURN_IF_ERROR(SetReferenceOf(version, *evaluator));

  // The layers coded with column scales in the current pass (none in the
  // first), and each tensor decoded as the client would see it: at the tier's
  // fixed coding (qp 0) or at a grid QP, each coded once (and kept for the
  // version's next candidates and searches, within kDecodedLayerCacheBytes),
  // as the candidates (and the weighed pass's curves) need them.
  InputRmsMap weighed;
  const auto decode =
      [&](size_t index,
          int qp) -> absl::StatusOr<std::shared_ptr<const DecodedLayer>> {
    const std::string key = DecodedLayerKey(
        version, tier, index, qp,
        weighed.count(encoding->source->headers()[index].name) > 0);
    if (std::shared_ptr<const DecodedLayer> kept = decoded_layers_.Get(key))
      return kept;
    ASSIGN_OR_RETURN(const Tensor tensor, encoding->source->Read(index));
    LayerEncodeOptions base;
    base.hevc.preset = options_.x265_preset;
    base.threads = 1;
    SpreadTiles(encoding, &base);
    TierSpec at = tier;
    at.qp = qp;
    LayerEncodeOptions options = OptionsFor(tensor, encoding->policy, at, base);
    WeighColumns(tensor, weighed, &options);
    ASSIGN_OR_RETURN(const PackedLayer layer,
                     options_.layer_encoder->Encode(tensor, options));
    const uint64_t bytes = SerializePackedLayer(layer).size();
    ASSIGN_OR_RETURN(Model one, UnpackModel({layer}, /*threads=*/1));
    if (one.tensors.size() != 1)
      return absl::InternalError("a layer decoded to several tensors");
    ASSIGN_OR_RETURN(const std::vector<float> original, ToFloat32(tensor));
    ASSIGN_OR_RETURN(const std::vector<float> back, ToFloat32(one.tensors[0]));
    const double sqnr_db = ColumnScaledSqnrDb(
        original, back, options.column_scales, options.column_scale_repeat,
        MatrixView(tensor.shape).second);
    auto decoded = std::make_shared<const DecodedLayer>(
        DecodedLayer{std::move(one.tensors[0]), bytes, sqnr_db});
    decoded_layers_.Put(key, decoded, decoded->tensor.data.size());
    return decoded;
  };
  // The model at these QPs, decoded and run: its output cosine with the float
  // model's, the tier's measure (top-1 or that cosine) and its layers' bytes.
  const RunModel run =
      [&](const std::vector<int>& qps) -> absl::StatusOr<Measured> {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_)
        return absl::UnavailableError("the server is shutting down");
    }
    Model model;
    uint64_t bytes = 0;
    for (size_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(const auto layer, decode(i, qps[i]));
      model.tensors.push_back(layer->tensor);
      bytes += layer->bytes;
    }
    ASSIGN_OR_RETURN(const Accuracy accuracy, evaluator->Evaluate(model));
    if (options_.metrics) options_.metrics->RecordAccuracyEvaluation(tier.name);
    if (!accuracy.output_cosine)
      return absl::InternalError("the evaluation gave no output cosine");
    return Measured{*accuracy.output_cosine,
                    by_cosine ? *accuracy.output_cosine : accuracy.top1, bytes};
  };
  SearchSpace space{measured.curves, measured.tensor_of, measured.fixed, count};
  ASSIGN_OR_RETURN(const SearchResult plain,
                   SearchAllocation(space, target, run));
  int probes = plain.probes, evaluations = plain.evaluations;
  std::optional<Candidate> best = plain.best;
  bool columns = false;
  std::string weighed_bytes = "not searched";  // for the log
  // Again with the layers worth weighing coded with column scales, on their
  // curves measured so; kept only if smaller.
  if (options_.column_weighting) {
    ASSIGN_OR_RETURN(weighed, InputRmsToWeighOf(*encoding, *evaluator));
    std::set<size_t> changed;  // the tensors the weighing codes otherwise
    for (size_t c = 0; c < space.curves.size(); ++c) {
      const size_t index = space.tensor_of[c];
      LayerEncodeOptions options =
          OptionsFor(encoding->source->headers()[index], encoding->policy, tier,
                     LayerEncodeOptions());
      WeighColumns(encoding->source->headers()[index], weighed, &options);
      if (!options.column_scales.empty()) changed.insert(index);
    }
    if (!changed.empty()) {
      std::shared_ptr<const std::vector<LayerRateCurve>> known;
      {
        absl::MutexLock lock(&mu_);
        auto it = weighed_curves_.find(version.id);
        if (it != weighed_curves_.end()) known = it->second;
      }
      if (known && known->size() == space.curves.size()) {
        space.curves = *known;  // measured by another accuracy tier
      } else {
        for (size_t c = 0; c < space.curves.size(); ++c) {
          if (!changed.count(space.tensor_of[c])) continue;
          for (RatePoint& point : space.curves[c].points) {
            ASSIGN_OR_RETURN(const auto layer,
                             decode(space.tensor_of[c], point.qp));
            point.bytes = layer->bytes;
            point.sqnr_db = layer->sqnr_db;
          }
        }
        absl::MutexLock lock(&mu_);
        weighed_curves_[version.id] =
            std::make_shared<const std::vector<LayerRateCurve>>(space.curves);
      }
      ASSIGN_OR_RETURN(const SearchResult weighted,
                       SearchAllocation(space, target, run));
      probes += weighted.probes;
      evaluations += weighted.evaluations;
      weighed_bytes = weighted.best ? absl::StrCat(weighted.best->bytes)
                                    : std::string("none");
      if (weighted.best && (!best || weighted.best->bytes < best->bytes)) {
        best = weighted.best;
        columns = true;
      }
    }
  }
  if (!best) {
    const Candidate& finest = plain.finest;
    return absl::FailedPreconditionError(
        by_cosine
            ? absl::StrFormat(
                  "tier '%s': even the finest HEVC allocation (%d bytes) "
                  "measures output cosine %.4f, below %.4f; pull 'lossless' or "
                  "a qNN tier instead",
                  tier.name, finest.bytes, finest.measured.measure, target)
            : absl::StrFormat(
                  "tier '%s': even the finest HEVC allocation (%d bytes) "
                  "measures top-1 %.2f %%, more than %.2f points below the "
                  "float model's %.2f %%; pull 'lossless' or a qNN tier "
                  "instead",
                  tier.name, finest.bytes, finest.measured.measure,
                  tier.max_top1_drop_hundredths / 100.0, reference));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::fprintf(
      stderr,
      "weightcastd: %s/%s tier %s: %d sensitivity probes and %d evaluations "
      "in %.1f s; %llu bytes%s at %s %.4g (float %.4g; plain search %s bytes, "
      "weighed columns %s)\n",
      version.model.c_str(), version.version.c_str(), tier.name.c_str(), probes,
      evaluations, seconds, static_cast<unsigned long long>(best->bytes),
      columns ? " (columns weighed)" : "", measure_name, best->measured.measure,
      reference, plain.best ? absl::StrCat(plain.best->bytes).c_str() : "none",
      weighed_bytes.c_str());
  AccuracyChoice choice{best->qps, columns};
  registry_
      ->SetSetting(SearchKey(version, tier.name),
                   absl::StrCat(absl::StrJoin(choice.qps, ","),
                                columns ? kColumnsSuffix : ""))
      .IgnoreError();  // without it, the tier searches again when re-encoded
  if (columns) encoding->input_rms = std::move(weighed);
  return choice;
}

absl::StatusOr<InputRmsMap> ModelStore::InputRmsToWeighOf(
    const Encoding& encoding, Evaluator& evaluator) {
  ASSIGN_OR_RETURN(const Model float_model, encoding.source->ReadAll());
  ASSIGN_OR_RETURN(InputRmsMap rms, evaluator.InputRmsToWeigh(float_model));
  // Only the layers whose QP the search chooses: the others' bytes are fixed.
  for (const Tensor& header : encoding.source->headers()) {
    if (!FollowsTierQp(header, encoding.policy, encoding.tier))
      rms.erase(header.name);
  }
  return rms;
}

absl::StatusOr<std::unique_ptr<Evaluator>> ModelStore::LoadEvaluator(
    const std::string& module_path, const std::string& data_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                   Evaluator::Load(module_path, data_path));
  evaluator->SetCancel([this] { return cancelling_.load(); });
  return evaluator;
}

absl::StatusOr<std::unique_ptr<Evaluator>> ModelStore::LoadEvaluator(
    const VersionRecord& version) {
  return LoadEvaluator(blobs_->PathOf(version.eval_module_sha256),
                       blobs_->PathOf(version.eval_data_sha256));
}

absl::Status ModelStore::SetReferenceOf(const VersionRecord& version,
                                        Evaluator& evaluator) {
  const std::string key =
      ReferenceKey(version.source_sha256, version.eval_module_sha256,
                   version.eval_data_sha256);
  if (std::shared_ptr<const ReferenceOutputs> kept = references_.Get(key))
    return evaluator.SetReference(*kept);
  ASSIGN_OR_RETURN(
      const std::unique_ptr<CheckpointSource> source,
      CheckpointSource::Open(blobs_->PathOf(version.source_sha256)));
  ASSIGN_OR_RETURN(const Model float_model, source->ReadAll());
  RETURN_IF_ERROR(evaluator.SetReference(float_model).status());
  KeepReference(key,
                std::make_shared<const ReferenceOutputs>(evaluator.reference(
                    references_.budget_bytes() / sizeof(float))));
  return absl::OkStatus();
}

void ModelStore::KeepReference(
    const std::string& key, std::shared_ptr<const ReferenceOutputs> outputs) {
  if (!outputs || outputs->rows == 0) return;
  const uint64_t bytes = outputs->values.size() * sizeof(float);
  references_.Put(key, std::move(outputs), bytes);
}

std::string ModelStore::NameBundleFiles(const VersionRecord& version,
                                        absl::string_view message) const {
  return absl::StrReplaceAll(
      message,
      {{blobs_->PathOf(version.eval_module_sha256), "the evaluation module"},
       {blobs_->PathOf(version.eval_data_sha256), "the evaluation data"}});
}

void ModelStore::EncodeAccuracyTier(const std::shared_ptr<Encoding>& encoding) {
  absl::StatusOr<AccuracyChoice> choice = SearchAccuracy(encoding);
  if (!choice.ok()) {
    {
      absl::MutexLock lock(&mu_);
      // Shutdown() left the tier NOT_ENCODED: searched again when next asked.
      if (stopping_) return;
    }
    Fail(encoding, absl::Status(choice.status().code(),
                                NameBundleFiles(encoding->version,
                                                choice.status().message())));
    return;
  }
  EncodeLayers(encoding, std::move(choice->qps));
}

void ModelStore::EncodeSearchedTier(const std::shared_ptr<Encoding>& encoding,
                                    AccuracyChoice choice) {
  if (choice.columns) {
    const VersionRecord& version = encoding->version;
    absl::StatusOr<InputRmsMap> weighed = [&]() -> absl::StatusOr<InputRmsMap> {
      ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                       LoadEvaluator(version));
      return InputRmsToWeighOf(*encoding, *evaluator);
    }();
    if (!weighed.ok()) {
      Fail(encoding,
           absl::Status(weighed.status().code(),
                        NameBundleFiles(version, weighed.status().message())));
      return;
    }
    encoding->input_rms = *std::move(weighed);
  }
  EncodeLayers(encoding, std::move(choice.qps));
}

std::optional<AccuracyChoice> ModelStore::SearchedChoice(
    const VersionRecord& version, const std::string& tier) {
  auto stored = registry_->GetSetting(SearchKey(version, tier), "");
  if (!stored.ok()) return std::nullopt;
  return ParseChoice(*stored, version.tensors.size());
}

}  // namespace weightcast
