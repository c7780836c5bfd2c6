#include "server/core/accuracy_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "common/base/status_macros.h"

namespace weightcast {
namespace {

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

// One search: the state its passes share.
class Search {
 public:
  Search(SearchSpace space, double target, const RunModel& run)
      : space_(std::move(space)), target_(target), run_(run) {
    coarsest_ = finest_ = space_.fixed;
    for (const LayerRateCurve& curve : space_.curves) {
      uint64_t least = std::numeric_limits<uint64_t>::max(), most = 0;
      for (const RatePoint& point : curve.points) {
        least = std::min(least, point.bytes);
        most = std::max(most, point.bytes);
      }
      coarsest_ += least;
      finest_ += most;
    }
  }

  absl::StatusOr<SearchResult> Run() {
    // The finest allocation first: if it misses the target, no budget meets
    // it.
    ASSIGN_OR_RETURN(result_.finest, Allocate(finest_));
    ASSIGN_OR_RETURN(result_.finest.measured, Evaluate(result_.finest.qps));
    if (result_.finest.measured.measure < target_) return result_;
    best_ = result_.finest;
    // First over the data-free allocations (every layer's NSR alike); then,
    // with two to kMaxSensitivityProbes picture layers and room below the
    // first pass's choice, over allocations that weigh each layer by its
    // measured sensitivity: that choice stands unless a smaller one meets the
    // target too.
    RETURN_IF_ERROR(Bisect(kMaxAccuracyEvaluations));
    if (Apart(static_cast<double>(coarsest_) - 1) &&
        space_.curves.size() >= 2 &&
        space_.curves.size() <= kMaxSensitivityProbes) {
      RETURN_IF_ERROR(WeighCurves());
      if (weighted_)
        RETURN_IF_ERROR(Bisect(result_.evaluations + kMaxAccuracyEvaluations));
    }
    RETURN_IF_ERROR(Descend(result_.evaluations + kMaxDescentEvaluations));
    result_.best = best_;
    return result_;
  }

 private:
  // The model at `qps`, run once per search: an allocation the bisections,
  // probes or descent reach again is looked up, not run again. `*ran`: whether
  // it ran now.
  absl::StatusOr<Measured> Run(const std::vector<int>& qps, bool* ran) {
    *ran = false;
    const auto known = measured_.find(qps);
    if (known != measured_.end()) return known->second;
    ASSIGN_OR_RETURN(const Measured measured, run_(qps));
    *ran = true;
    measured_.emplace(qps, measured);
    return measured;
  }

  // A candidate's Run, counted in the evaluations when it ran.
  absl::StatusOr<Measured> Evaluate(const std::vector<int>& qps) {
    bool ran = false;
    ASSIGN_OR_RETURN(const Measured measured, Run(qps, &ran));
    if (ran) ++result_.evaluations;
    return measured;
  }

  absl::StatusOr<Candidate> Allocate(uint64_t budget) const {
    ASSIGN_OR_RETURN(const Allocation allocation,
                     AllocateBudget(space_.curves, space_.fixed, budget));
    Candidate candidate{
        allocation.bytes, std::vector<int>(space_.tensors, 0), {}};
    for (size_t c = 0; c < space_.curves.size(); ++c)
      candidate.qps[space_.tensor_of[c]] = allocation.qp[c];
    return candidate;
  }

  // The bounds (a budget that misses, the best that meets) still too far
  // apart.
  bool Apart(double missing) const {
    return static_cast<double>(best_.bytes) >
           std::max(missing, 1.0) * kAccuracySearchBracket;
  }

  // Bisection on the logarithm of the budget between a budget known (or
  // taken) to miss the target and the smallest candidate known to meet it,
  // each step one evaluation, until they are within kAccuracySearchBracket of
  // each other or `stop_at` evaluations have run.
  absl::Status Bisect(int stop_at) {
    double missing = static_cast<double>(coarsest_) - 1;
    for (int step = 0;
         step < 64 && result_.evaluations < stop_at && Apart(missing); ++step) {
      const double middle =
          std::sqrt(std::max(missing, 1.0) * static_cast<double>(best_.bytes));
      ASSIGN_OR_RETURN(
          Candidate candidate,
          Allocate(std::max(coarsest_, static_cast<uint64_t>(middle))));
      if (candidate.bytes >= best_.bytes) {  // nothing smaller below this
        missing = middle;
        continue;
      }
      ASSIGN_OR_RETURN(candidate.measured, Evaluate(candidate.qps));
      if (candidate.measured.measure >= target_) {
        best_ = std::move(candidate);
      } else {
        missing = middle;
      }
    }
    return absl::OkStatus();
  }

  // Each curve's weight from a probe of its sensitivity (WeighBySensitivity)
  // from the finest allocation.
  absl::Status WeighCurves() {
    const Candidate& finest = result_.finest;
    std::vector<int> finest_qp;
    for (size_t c = 0; c < space_.curves.size(); ++c)
      finest_qp.push_back(finest.qps[space_.tensor_of[c]]);
    const auto cosine_of = [&](size_t c, int qp) -> absl::StatusOr<double> {
      std::vector<int> qps = finest.qps;
      qps[space_.tensor_of[c]] = qp;
      bool ran = false;
      ASSIGN_OR_RETURN(const Measured measured, Run(qps, &ran));
      return measured.cosine;
    };
    ASSIGN_OR_RETURN(
        const SensitivityProbes probes,
        WeighBySensitivity(finest_qp, finest.measured.cosine,
                           kSensitivityProbeDb, cosine_of, &space_.curves));
    result_.probes = probes.run;
    weighted_ = probes.weighted;
    return absl::OkStatus();
  }

  // From the best: curve by curve, the most bytes at the best first
  // (DescendLayer); stops when `stop_at` evaluations have run.
  absl::Status Descend(int stop_at) {
    std::vector<std::pair<uint64_t, size_t>> order;  // (bytes at best, curve)
    for (size_t c = 0; c < space_.curves.size(); ++c) {
      const RatePoint* at =
          PointAt(space_.curves[c], best_.qps[space_.tensor_of[c]]);
      if (at != nullptr) order.emplace_back(at->bytes, c);
    }
    std::sort(order.rbegin(), order.rend());
    for (const auto& entry : order)
      RETURN_IF_ERROR(DescendLayer(entry.second, stop_at));
    return absl::OkStatus();
  }

  // Curve c's layer one grid point coarser at a time while the candidate
  // still meets the target, and past up to kDescentLookahead points that miss
  // (the measure is not monotone in a layer's QP); then, when the runner
  // reports bytes, the QP halfway between the best's and the first point that
  // missed past it (off the grid; kept if it meets the target in fewer bytes
  // as coded than the best's).
  absl::Status DescendLayer(size_t c, int stop_at) {
    const LayerRateCurve& curve = space_.curves[c];
    const size_t tensor = space_.tensor_of[c];
    const RatePoint* from = PointAt(curve, best_.qps[tensor]);
    const RatePoint* first_miss = nullptr;  // since the best last moved
    for (int missed = 0; from != nullptr && missed <= kDescentLookahead &&
                         result_.evaluations < stop_at;) {
      const RatePoint* at = PointAt(curve, best_.qps[tensor]);
      const RatePoint* coarser = NextCoarser(curve, *from);
      if (coarser == nullptr) break;
      Candidate candidate = best_;
      candidate.qps[tensor] = coarser->qp;
      candidate.bytes = best_.bytes - at->bytes + coarser->bytes;
      ASSIGN_OR_RETURN(candidate.measured, Evaluate(candidate.qps));
      from = coarser;
      if (candidate.measured.measure >= target_) {
        best_ = std::move(candidate);
        missed = 0;
        first_miss = nullptr;
      } else if (missed++ == 0) {
        first_miss = coarser;
      }
    }
    if (first_miss == nullptr || best_.measured.bytes == 0 ||
        result_.evaluations >= stop_at)
      return absl::OkStatus();
    Candidate between = best_;
    between.qps[tensor] = (best_.qps[tensor] + first_miss->qp) / 2;
    if (between.qps[tensor] == best_.qps[tensor]) return absl::OkStatus();
    ASSIGN_OR_RETURN(between.measured, Evaluate(between.qps));
    between.bytes = between.measured.bytes;
    if (between.measured.measure >= target_ &&
        between.measured.bytes < best_.measured.bytes)
      best_ = std::move(between);
    return absl::OkStatus();
  }

  SearchSpace space_;
  const double target_;
  const RunModel& run_;
  uint64_t coarsest_ = 0, finest_ = 0;
  Candidate best_;
  bool weighted_ = false;
  std::map<std::vector<int>, Measured> measured_;  // every allocation run
  SearchResult result_;
};

}  // namespace

absl::StatusOr<SearchResult> SearchAllocation(SearchSpace space, double target,
                                              const RunModel& run) {
  return Search(std::move(space), target, run).Run();
}

}  // namespace weightcast
