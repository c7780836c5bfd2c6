// Per-layer QP for a byte budget: equal-slope rate-distortion allocation over
// measured per-layer rate/SQNR curves. Pure functions; thread-safe.
//
// The distortion of a layer is its noise-to-signal ratio, NSR = 10^(-SQNR/10),
// and the model's is the sum over layers. That is the data-free sensitivity
// proxy: through a chain of layers each weight error perturbs its layer's
// output roughly in proportion to the layer's relative weight error, and
// independent perturbations add, so the output's NSR is about the sum of the
// layers'. Every layer weighs the same however many weights it holds, so the
// bits go where one byte buys the most relative precision, which a uniform QP
// (a step proportional to each layer's own max|w|) does not do. Where the
// model was measured (an acc-X or cos-C search with an evaluation bundle), each
// layer's NSR is weighted by its measured sensitivity instead
// (LayerRateCurve::weight).
#ifndef WEIGHTCAST_COMMON_PACK_RATE_ALLOCATION_H_
#define WEIGHTCAST_COMMON_PACK_RATE_ALLOCATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace weightcast {

// The QPs at which a budget tier measures each picture layer, coarsest first:
// the default of weightcastd's --rate-qps.
const std::vector<int>& BudgetQpGrid();

// A list of rate-curve QPs, "51,40,30,...": 2 to 51 distinct QPs in 1..51 (0
// means a layer's fixed coding in an accuracy tier's choice), returned
// coarsest first. INVALID_ARGUMENT naming the first bad entry otherwise.
absl::StatusOr<std::vector<int>> ParseRateQps(absl::string_view list);

struct RatePoint {
  int qp = 0;
  uint64_t bytes = 0;  // packed layer bytes at this QP
  double sqnr_db = 0;  // against the float weights
};

struct LayerRateCurve {
  std::string name;
  std::vector<RatePoint> points;  // any order; at least one
  // What a unit of this layer's NSR costs the model's output: 1 for every
  // layer when nothing was measured; else a measured sensitivity (the output's
  // distortion per unit of the layer's NSR), which makes AllocateBudget
  // minimize the sum of weight x NSR. Finite and positive (AllocateBudget
  // refuses others).
  double weight = 1;
};

// 10^(-sqnr_db/10); 0 for an exact layer (SQNR +inf).
double NoiseToSignal(double sqnr_db);

struct Allocation {
  std::vector<int> qp;  // one per curve, in the curves' order
  uint64_t bytes = 0;   // fixed bytes + the chosen points' bytes
  double nsr = 0;       // sum of the chosen points' NSR, each x its weight
};

// Chooses one point per curve so that fixed_bytes + their bytes <= budget_bytes
// with the least total weighted NSR the greedy equal-slope walk along each
// curve's lower convex hull finds. With more budget than the finest points
// need, every layer gets its finest point. INVALID_ARGUMENT when even the
// coarsest points exceed the budget (saying how many bytes the model needs at
// least).
absl::StatusOr<Allocation> AllocateBudget(
    const std::vector<LayerRateCurve>& curves, uint64_t fixed_bytes,
    uint64_t budget_bytes);

// What WeighBySensitivity did: the probes it ran, and whether the weights now
// differ from 1 (false when no probe moved the outputs).
struct SensitivityProbes {
  int run = 0;
  bool weighted = false;
};

// The model's output cosine with the float model's outputs when curve
// `curve`'s layer is at `qp` and every other layer at its finest point.
using CosineWithOneLayerAt =
    std::function<absl::StatusOr<double>(size_t curve, int qp)>;

// Sets each curve's weight to its layer's measured sensitivity: the growth of
// the output's distortion (1 - cosine) from the finest allocation (curve c at
// finest_qp[c], whose outputs have finest_cosine) to the layer alone at its
// probe point (the point whose SQNR is nearest probe_db, coarser than its
// finest), over the growth of the layer's NSR. A layer whose probe did not
// move the outputs gets a thousandth of the largest weight (coded coarsely,
// not dropped); when none moved them the weights stay 1. Errors: cosine_of's.
absl::StatusOr<SensitivityProbes> WeighBySensitivity(
    const std::vector<int>& finest_qp, double finest_cosine, double probe_db,
    const CosineWithOneLayerAt& cosine_of, std::vector<LayerRateCurve>* curves);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_RATE_ALLOCATION_H_
