// ModelStore's accuracy tiers ("acc-0.5", "cos-0.99"): after the version's
// rate curves (the budget tiers' measurement), a bounded bisection over byte
// budgets, each candidate allocation decoded and run by the real evaluator on
// the version's bundle, then (with several picture layers) a second one below
// its choice over allocations weighted by each layer's measured sensitivity,
// and last a bounded descent layer by layer from the choice; the smallest
// candidate within the tier's top-1 drop (or at or above its output cosine)
// is then encoded like a budget tier. The
// chosen QPs are kept in the registry, so that the tier evicted (or lost to a
// restart mid-encoding) is encoded again without searching again.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"
#include "common/eval/evaluator.h"
#include "common/pack/packed_model.h"
#include "common/pack/rate_allocation.h"
#include "server/core/model_store.h"

namespace weightcast {
namespace {

// A candidate model decoded and run on the bundle.
struct Measured {
  double cosine = 0;   // its outputs' mean cosine with the float model's
  double measure = 0;  // the tier's measure: top-1 (acc-X) or that cosine
};
using RunModel =
    std::function<absl::StatusOr<Measured>(const std::vector<int>& qps)>;

// Where the QPs an accuracy search chose are kept: the version's id,
// checkpoint and evaluation data (an id a deleted version had may be given
// again), and the tier.
std::string SearchKey(const VersionRecord& version, const std::string& tier) {
  return absl::StrCat("accuracy-search/", version.id, "/",
                      version.source_sha256, "/", version.eval_data_sha256, "/",
                      tier);
}

// An allocation of QPs and what it measured.
struct Candidate {
  uint64_t bytes = 0;
  std::vector<int> qps;  // per tensor (0: the tier's fixed coding)
  Measured measured;     // once run
};

// The point of `curve` at `qp`; null when the curve has none.
const RatePoint* PointAt(const LayerRateCurve& curve, int qp) {
  for (const RatePoint& point : curve.points)
    if (point.qp == qp) return &point;
  return nullptr;
}

// The next coarser point of `curve` than `from`: the lowest QP above it that
// costs fewer bytes; null at the coarsest.
const RatePoint* NextCoarser(const LayerRateCurve& curve,
                             const RatePoint& from) {
  const RatePoint* next = nullptr;
  for (const RatePoint& point : curve.points) {
    if (point.qp > from.qp && point.bytes < from.bytes &&
        (next == nullptr || point.qp < next->qp))
      next = &point;
  }
  return next;
}

// kMaxDescentEvaluations' descent from `best` (which meets `target`): curve
// by curve, the most bytes at `best` first, its layer one point coarser at a
// time while the candidate still meets the target; stops when `*evaluations`
// reaches `stop_at`.
absl::Status DescendLayerByLayer(const std::vector<LayerRateCurve>& curves,
                                 const std::vector<size_t>& tensor_of,
                                 double target, const RunModel& run,
                                 int stop_at, int* evaluations,
                                 Candidate* best) {
  std::vector<std::pair<uint64_t, size_t>> order;  // (bytes at best, curve)
  for (size_t c = 0; c < curves.size(); ++c) {
    const RatePoint* at = PointAt(curves[c], best->qps[tensor_of[c]]);
    if (at != nullptr) order.emplace_back(at->bytes, c);
  }
  std::sort(order.rbegin(), order.rend());
  for (const auto& entry : order) {
    const size_t c = entry.second;
    while (*evaluations < stop_at) {
      const RatePoint* at = PointAt(curves[c], best->qps[tensor_of[c]]);
      const RatePoint* coarser =
          at == nullptr ? nullptr : NextCoarser(curves[c], *at);
      if (coarser == nullptr) break;
      Candidate candidate = *best;
      candidate.qps[tensor_of[c]] = coarser->qp;
      candidate.bytes = best->bytes - at->bytes + coarser->bytes;
      ASSIGN_OR_RETURN(candidate.measured, run(candidate.qps));
      ++*evaluations;
      if (candidate.measured.measure < target) break;
      *best = std::move(candidate);
    }
  }
  return absl::OkStatus();
}

// The stored QPs, if they are one per tensor and each 0 (the tier's fixed
// coding) or a QP of the budget grid.
std::optional<std::vector<int>> ParseQps(const std::string& text,
                                         size_t tensors) {
  if (text.empty()) return std::nullopt;
  std::vector<int> qps;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int qp = 0;
    if (!absl::SimpleAtoi(part, &qp) || qp < 0 || qp > 51 ||
        qps.size() == tensors) {
      return std::nullopt;
    }
    qps.push_back(qp);
  }
  if (qps.size() != tensors) return std::nullopt;
  return qps;
}

}  // namespace

absl::StatusOr<std::vector<int>> ModelStore::SearchAccuracy(
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
  MeasuredCurves measured = CurvesOf(*encoding);
  std::vector<LayerRateCurve>& curves = measured.curves;
  const std::vector<size_t>& tensor_of = measured.tensor_of;
  const uint64_t fixed = measured.fixed;
  if (curves.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tier '", tier.name, "': ", version.model, "/", version.version,
        " has no picture layers whose QP could be chosen"));
  }
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator,
                   Evaluator::Load(blobs_->PathOf(version.eval_module_sha256),
                                   blobs_->PathOf(version.eval_data_sha256)));
  // The float model's outputs: cos-C's measure, and every search's sensitivity
  // probes'.
  RETURN_IF_ERROR(SetReferenceOf(version, *evaluator));

  // Each tensor decoded as the client would see it: at the tier's fixed coding
  // (qp 0) or at a grid QP, each coded once, as the candidates need them.
  std::map<std::pair<size_t, int>, Tensor> decoded;
  const auto decode = [&](size_t index, int qp) -> absl::StatusOr<Tensor> {
    if (auto it = decoded.find({index, qp}); it != decoded.end())
      return it->second;
    ASSIGN_OR_RETURN(const Tensor tensor, encoding->source->Read(index));
    LayerEncodeOptions base;
    base.hevc.preset = options_.x265_preset;
    base.threads = 1;
    SpreadTiles(encoding, &base);
    TierSpec at = tier;
    at.qp = qp;
    ASSIGN_OR_RETURN(
        const PackedLayer layer,
        options_.layer_encoder->Encode(
            tensor, OptionsFor(tensor, encoding->policy, at, base)));
    ASSIGN_OR_RETURN(Model one, UnpackModel({layer}, /*threads=*/1));
    if (one.tensors.size() != 1)
      return absl::InternalError("a layer decoded to several tensors");
    decoded.emplace(std::make_pair(index, qp), one.tensors[0]);
    return std::move(one.tensors[0]);
  };
  int evaluations = 0;  // candidates run (the sensitivity probes not counted)
  // The model at these QPs, decoded and run: its output cosine with the float
  // model's, and the tier's measure (top-1 or that cosine).
  const RunModel run =
      [&](const std::vector<int>& qps) -> absl::StatusOr<Measured> {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_)
        return absl::UnavailableError("the server is shutting down");
    }
    Model model;
    for (size_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(Tensor tensor, decode(i, qps[i]));
      model.tensors.push_back(std::move(tensor));
    }
    ASSIGN_OR_RETURN(const Accuracy accuracy, evaluator->Evaluate(model));
    if (options_.metrics) options_.metrics->RecordAccuracyEvaluation(tier.name);
    if (!accuracy.output_cosine)
      return absl::InternalError("the evaluation gave no output cosine");
    return Measured{*accuracy.output_cosine,
                    by_cosine ? *accuracy.output_cosine : accuracy.top1};
  };
  const auto allocate = [&](uint64_t budget) -> absl::StatusOr<Candidate> {
    ASSIGN_OR_RETURN(const Allocation allocation,
                     AllocateBudget(curves, fixed, budget));
    Candidate candidate{allocation.bytes, std::vector<int>(count, 0), {}};
    for (size_t c = 0; c < curves.size(); ++c)
      candidate.qps[tensor_of[c]] = allocation.qp[c];
    return candidate;
  };
  uint64_t coarsest = fixed, finest = fixed;
  for (const LayerRateCurve& curve : curves) {
    uint64_t least = std::numeric_limits<uint64_t>::max(), most = 0;
    for (const RatePoint& point : curve.points) {
      least = std::min(least, point.bytes);
      most = std::max(most, point.bytes);
    }
    coarsest += least;
    finest += most;
  }
  // The finest allocation first: if it misses the target, no budget meets it.
  ASSIGN_OR_RETURN(Candidate best, allocate(finest));
  ASSIGN_OR_RETURN(best.measured, run(best.qps));
  ++evaluations;
  const Candidate finest_run = best;
  if (best.measured.measure < target) {
    return absl::FailedPreconditionError(
        by_cosine
            ? absl::StrFormat(
                  "tier '%s': even the finest HEVC allocation (%d bytes) "
                  "measures output cosine %.4f, below %.4f; pull 'lossless' or "
                  "a qNN tier instead",
                  tier.name, best.bytes, best.measured.measure, target)
            : absl::StrFormat(
                  "tier '%s': even the finest HEVC allocation (%d bytes) "
                  "measures top-1 %.2f %%, more than %.2f points below the "
                  "float model's %.2f %%; pull 'lossless' or a qNN tier "
                  "instead",
                  tier.name, best.bytes, best.measured.measure,
                  tier.max_top1_drop_hundredths / 100.0, reference));
  }
  // Bisection on the logarithm of the budget between a budget known (or taken)
  // to miss the target and the smallest candidate known to meet it (`best`),
  // each step one evaluation, until they are within kAccuracySearchBracket of
  // each other or the pass has evaluated kMaxAccuracyEvaluations candidates
  // (the first pass counting the finest).
  const auto apart = [&](double missing) {  // the bounds still too far apart
    return static_cast<double>(best.bytes) >
           std::max(missing, 1.0) * kAccuracySearchBracket;
  };
  const auto bisect = [&](int stop_at) -> absl::Status {
    double missing = static_cast<double>(coarsest) - 1;
    for (int step = 0; step < 64 && evaluations < stop_at && apart(missing);
         ++step) {
      const double middle =
          std::sqrt(std::max(missing, 1.0) * static_cast<double>(best.bytes));
      ASSIGN_OR_RETURN(
          Candidate candidate,
          allocate(std::max(coarsest, static_cast<uint64_t>(middle))));
      if (candidate.bytes >= best.bytes) {  // nothing smaller below this budget
        missing = middle;
        continue;
      }
      ASSIGN_OR_RETURN(candidate.measured, run(candidate.qps));
      ++evaluations;
      if (candidate.measured.measure >= target) {
        best = std::move(candidate);
      } else {
        missing = middle;
      }
    }
    return absl::OkStatus();
  };
  // First over the data-free allocations (every layer's NSR alike); then, with
  // two to kMaxSensitivityProbes picture layers and room below the first
  // pass's choice, over allocations that weigh each layer by its measured
  // sensitivity: that choice stands unless a smaller one meets the target too.
  RETURN_IF_ERROR(bisect(kMaxAccuracyEvaluations));
  SensitivityProbes probes;
  if (apart(static_cast<double>(coarsest) - 1) && curves.size() >= 2 &&
      curves.size() <= kMaxSensitivityProbes) {
    std::vector<int> finest_qp;
    for (size_t c = 0; c < curves.size(); ++c)
      finest_qp.push_back(finest_run.qps[tensor_of[c]]);
    const auto cosine_of = [&](size_t c, int qp) -> absl::StatusOr<double> {
      std::vector<int> qps = finest_run.qps;
      qps[tensor_of[c]] = qp;
      ASSIGN_OR_RETURN(const Measured measured, run(qps));
      return measured.cosine;
    };
    ASSIGN_OR_RETURN(
        probes, WeighBySensitivity(finest_qp, finest_run.measured.cosine,
                                   kSensitivityProbeDb, cosine_of, &curves));
    if (probes.weighted)
      RETURN_IF_ERROR(bisect(evaluations + kMaxAccuracyEvaluations));
  }
  RETURN_IF_ERROR(DescendLayerByLayer(curves, tensor_of, target, run,
                                      evaluations + kMaxDescentEvaluations,
                                      &evaluations, &best));
  decoded.clear();
  malloc_trim(0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::fprintf(stderr,
               "weightcastd: %s/%s tier %s: %d sensitivity probes and %d "
               "evaluations in %.1f s; %llu bytes at %s %.4g (float %.4g)\n",
               version.model.c_str(), version.version.c_str(),
               tier.name.c_str(), probes.run, evaluations, seconds,
               static_cast<unsigned long long>(best.bytes), measure_name,
               best.measured.measure, reference);
  registry_
      ->SetSetting(SearchKey(version, tier.name), absl::StrJoin(best.qps, ","))
      .IgnoreError();  // without it, the tier searches again when re-encoded
  return best.qps;
}

absl::Status ModelStore::SetReferenceOf(const VersionRecord& version,
                                        Evaluator& evaluator) {
  const std::string key =
      ReferenceCache::Key(version.source_sha256, version.eval_module_sha256,
                          version.eval_data_sha256);
  if (std::shared_ptr<const ReferenceOutputs> kept = references_.Get(key))
    return evaluator.SetReference(*kept);
  ASSIGN_OR_RETURN(
      const std::unique_ptr<CheckpointSource> source,
      CheckpointSource::Open(blobs_->PathOf(version.source_sha256)));
  ASSIGN_OR_RETURN(const Model float_model, source->ReadAll());
  RETURN_IF_ERROR(evaluator.SetReference(float_model).status());
  references_.Put(key,
                  std::make_shared<const ReferenceOutputs>(evaluator.reference(
                      references_.budget_bytes() / sizeof(float))));
  return absl::OkStatus();
}

std::string ModelStore::NameBundleFiles(const VersionRecord& version,
                                        absl::string_view message) const {
  return absl::StrReplaceAll(
      message,
      {{blobs_->PathOf(version.eval_module_sha256), "the evaluation module"},
       {blobs_->PathOf(version.eval_data_sha256), "the evaluation data"}});
}

void ModelStore::EncodeAccuracyTier(const std::shared_ptr<Encoding>& encoding) {
  absl::StatusOr<std::vector<int>> qps = SearchAccuracy(encoding);
  if (!qps.ok()) {
    {
      absl::MutexLock lock(&mu_);
      // Shutdown() left the tier NOT_ENCODED: searched again when next asked.
      if (stopping_) return;
    }
    Fail(encoding, absl::Status(qps.status().code(),
                                NameBundleFiles(encoding->version,
                                                qps.status().message())));
    return;
  }
  EncodeLayers(encoding, *std::move(qps));
}

std::optional<std::vector<int>> ModelStore::SearchedQps(
    const VersionRecord& version, const std::string& tier) {
  auto stored = registry_->GetSetting(SearchKey(version, tier), "");
  if (!stored.ok()) return std::nullopt;
  return ParseQps(*stored, version.tensors.size());
}

}  // namespace weightcast
