#include "common/pack/rate_allocation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

// The lower convex hull of a curve in (bytes, NSR): more bytes always buy less
// NSR, and each further byte buys less than the one before.
std::vector<RatePoint> LowerHull(std::vector<RatePoint> points) {
  std::sort(
      points.begin(), points.end(), [](const RatePoint& a, const RatePoint& b) {
        return a.bytes != b.bytes ? a.bytes < b.bytes : a.sqnr_db > b.sqnr_db;
      });
  std::vector<RatePoint> hull;
  for (const RatePoint& p : points) {
    if (!hull.empty() &&
        NoiseToSignal(p.sqnr_db) >= NoiseToSignal(hull.back().sqnr_db))
      continue;  // dominated
    while (hull.size() >= 2) {
      const RatePoint& a = hull[hull.size() - 2];
      const RatePoint& b = hull.back();
      // b lies on or above the chord from a to p: it is never the best use of
      // its bytes.
      const double lhs = (NoiseToSignal(b.sqnr_db) - NoiseToSignal(a.sqnr_db)) *
                         double(p.bytes - a.bytes);
      const double rhs = (NoiseToSignal(p.sqnr_db) - NoiseToSignal(a.sqnr_db)) *
                         double(b.bytes - a.bytes);
      if (lhs < rhs) break;
      hull.pop_back();
    }
    hull.push_back(p);
  }
  return hull;
}

}  // namespace

double NoiseToSignal(double sqnr_db) {
  return std::isinf(sqnr_db) && sqnr_db > 0 ? 0.0
                                            : std::pow(10.0, -sqnr_db / 10.0);
}

const std::vector<int>& BudgetQpGrid() {
  static const std::vector<int> grid = {51, 48, 46, 44, 42, 40, 38, 36,
                                        34, 32, 30, 28, 26, 24, 22, 20,
                                        18, 16, 13, 10, 7,  4};
  return grid;
}

absl::StatusOr<std::vector<int>> ParseRateQps(absl::string_view list) {
  std::vector<int> qps;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    int qp = 0;
    if (!absl::SimpleAtoi(part, &qp) || qp < 1 || qp > 51) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rate-curve QP ", Echo(part), " is not a whole number in 1..51"));
    }
    if (std::find(qps.begin(), qps.end(), qp) != qps.end())
      return absl::InvalidArgumentError(
          absl::StrCat("rate-curve QP ", qp, " is listed twice"));
    qps.push_back(qp);
  }
  if (qps.size() < 2)
    return absl::InvalidArgumentError(
        "a rate curve needs at least 2 QPs (e.g. 51,40,30,22,13)");
  std::sort(qps.begin(), qps.end(), std::greater<int>());
  return qps;
}

absl::StatusOr<Allocation> AllocateBudget(
    const std::vector<LayerRateCurve>& curves, uint64_t fixed_bytes,
    uint64_t budget_bytes) {
  std::vector<std::vector<RatePoint>> hulls;
  Allocation allocation;
  allocation.bytes = fixed_bytes;
  for (const LayerRateCurve& curve : curves) {
    if (curve.points.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", curve.name, ": no rate points"));
    if (!std::isfinite(curve.weight) || curve.weight <= 0)
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", curve.name, ": weight ", curve.weight,
                       " is not a finite positive number"));
    hulls.push_back(LowerHull(curve.points));
    allocation.bytes += hulls.back().front().bytes;
  }
  if (allocation.bytes > budget_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a budget of ", budget_bytes, " bytes is below the ", allocation.bytes,
        " bytes this model needs at least (every picture layer at its "
        "coarsest QP, the other layers as they are)"));
  }
  struct Step {
    size_t layer;
    size_t to;       // hull index this step moves to
    double slope;    // NSR saved per byte
    uint64_t bytes;  // bytes it adds
  };
  std::vector<Step> steps;
  for (size_t i = 0; i < hulls.size(); ++i) {
    for (size_t j = 1; j < hulls[i].size(); ++j) {
      const uint64_t bytes = hulls[i][j].bytes - hulls[i][j - 1].bytes;
      const double saved =
          curves[i].weight * (NoiseToSignal(hulls[i][j - 1].sqnr_db) -
                              NoiseToSignal(hulls[i][j].sqnr_db));
      steps.push_back(
          {i, j, saved / double(std::max<uint64_t>(bytes, 1)), bytes});
    }
  }
  // Steepest first; within a layer the hull's slopes fall, so its steps stay in
  // order.
  std::stable_sort(
      steps.begin(), steps.end(),
      [](const Step& a, const Step& b) { return a.slope > b.slope; });
  std::vector<size_t> at(hulls.size(), 0);
  std::vector<bool> stuck(hulls.size(), false);
  for (const Step& step : steps) {
    if (stuck[step.layer] || at[step.layer] + 1 != step.to) continue;
    if (allocation.bytes + step.bytes > budget_bytes) {
      stuck[step.layer] = true;  // its later steps build on this one
      continue;
    }
    allocation.bytes += step.bytes;
    at[step.layer] = step.to;
  }
  for (size_t i = 0; i < hulls.size(); ++i) {
    allocation.qp.push_back(hulls[i][at[i]].qp);
    allocation.nsr += curves[i].weight * NoiseToSignal(hulls[i][at[i]].sqnr_db);
  }
  return allocation;
}

absl::StatusOr<SensitivityProbes> WeighBySensitivity(
    const std::vector<int>& finest_qp, double finest_cosine, double probe_db,
    const CosineWithOneLayerAt& cosine_of,
    std::vector<LayerRateCurve>* curves) {
  SensitivityProbes probes;
  std::vector<double> weights;
  double heaviest = 0;
  for (size_t c = 0; c < curves->size(); ++c) {
    const std::vector<RatePoint>& points = (*curves)[c].points;
    const auto finest = std::find_if(
        points.begin(), points.end(),
        [&](const RatePoint& point) { return point.qp == finest_qp[c]; });
    const RatePoint* probe = nullptr;
    for (const RatePoint& point : points) {
      if (finest == points.end() || point.sqnr_db >= finest->sqnr_db) continue;
      if (!probe || std::abs(point.sqnr_db - probe_db) <
                        std::abs(probe->sqnr_db - probe_db)) {
        probe = &point;
      }
    }
    double weight = 0;
    if (probe) {
      const double nsr_growth =
          NoiseToSignal(probe->sqnr_db) - NoiseToSignal(finest->sqnr_db);
      ASSIGN_OR_RETURN(const double cosine, cosine_of(c, probe->qp));
      ++probes.run;
      weight = std::max(0.0, (finest_cosine - cosine) / nsr_growth);
    }
    weights.push_back(weight);
    heaviest = std::max(heaviest, weight);
  }
  if (!(heaviest > 0) || !std::isfinite(heaviest)) return probes;
  for (size_t c = 0; c < curves->size(); ++c)
    (*curves)[c].weight = std::max(weights[c], heaviest / 1000);
  probes.weighted = true;
  return probes;
}

}  // namespace weightcast
