// The accuracy tiers' search over QP allocations ("acc-0.5", "cos-0.99"):
// given a version's rate curves and a way to run the model at chosen QPs, a
// bounded bisection over byte budgets, then (with several picture layers) a
// second one over allocations weighted by each layer's measured sensitivity,
// and last a bounded descent layer by layer from the choice. The ModelStore
// (model_store_accuracy.cc) gives it the curves, decodes and runs each
// candidate on the version's evaluation bundle, and encodes what it chose.
#ifndef WEIGHTCAST_SERVER_CORE_ACCURACY_SEARCH_H_
#define WEIGHTCAST_SERVER_CORE_ACCURACY_SEARCH_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/pack/rate_allocation.h"

namespace weightcast {

// The search evaluates at most this many candidate allocations per pass (the
// finest first, then a bisection on budget bytes), and stops earlier when the
// budgets that miss and meet the target are within this ratio.
inline constexpr int kMaxAccuracyEvaluations = 8;
inline constexpr double kAccuracySearchBracket = 1.03;
// With two to kMaxSensitivityProbes picture layers, a second bisection (at
// most as many evaluations again) over allocations weighted by each layer's
// sensitivity, probed (one evaluation per layer) from the finest allocation
// with the layer at its grid point nearest kSensitivityProbeDb of SQNR. A
// model with more layers keeps the data-free choice: a probe per layer would
// cost more than the search.
inline constexpr double kSensitivityProbeDb = 10;
inline constexpr size_t kMaxSensitivityProbes = 32;
// Last, a descent from the bisections' choice, layer by layer (the most bytes
// first): a picture layer one grid point coarser at a time while the model
// still meets the target, and kDescentLookahead points further past a miss
// (top-1 on a bundle is not monotone in a layer's QP: one example is a step),
// then the QP halfway to the first point that missed (off the grid; the
// default grid's steps are 2 or 3 QPs), at most kMaxDescentEvaluations
// evaluations. The bisections move along one family of allocations; the
// descent takes the slack it leaves in single layers. No allocation is run
// twice in a search: its measure is kept.
inline constexpr int kMaxDescentEvaluations = 12;
inline constexpr int kDescentLookahead = 1;

// A candidate model decoded and run on the bundle.
struct Measured {
  double cosine = 0;   // its outputs' mean cosine with the float model's
  double measure = 0;  // the tier's measure: top-1 (acc-X) or that cosine
  uint64_t bytes = 0;  // its layers' bytes as coded (0: not reported)
};
// Runs the model at `qps` (one per tensor; 0: the tier's fixed coding).
using RunModel =
    std::function<absl::StatusOr<Measured>(const std::vector<int>& qps)>;

// An allocation of QPs and what it measured.
struct Candidate {
  uint64_t bytes = 0;
  std::vector<int> qps;  // per tensor (0: the tier's fixed coding)
  Measured measured;     // once run
};

// What the search chooses from: the curves of the layers whose QP may be
// chosen, the tensor each belongs to, the bytes of the other layers, and the
// version's tensor count.
struct SearchSpace {
  std::vector<LayerRateCurve> curves;
  std::vector<size_t> tensor_of;  // curve -> tensor index
  uint64_t fixed = 0;
  size_t tensors = 0;
};

struct SearchResult {
  Candidate finest;               // run first
  std::optional<Candidate> best;  // none when even the finest misses
  int probes = 0;                 // sensitivity probes run
  int evaluations = 0;            // candidates run (probes not counted)
};

// What an accuracy tier's search chose: the QPs (one per tensor, 0: the
// tier's fixed coding) and whether the layers worth weighing carry column
// scales (the ModelStore searches both ways).
struct AccuracyChoice {
  std::vector<int> qps;
  bool columns = false;
};

// The smallest allocation of `space` found whose measure is at least
// `target`, running at most 2 * kMaxAccuracyEvaluations +
// kMaxDescentEvaluations candidates and (with 2 to kMaxSensitivityProbes
// curves) a probe per curve. `run`'s errors end the search.
absl::StatusOr<SearchResult> SearchAllocation(SearchSpace space, double target,
                                              const RunModel& run);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_ACCURACY_SEARCH_H_
