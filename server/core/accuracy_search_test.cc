// The accuracy tiers' search over QP allocations, on made-up rate curves and
// a made-up measure: no codec, no model.
#include "server/core/accuracy_search.h"

#include <map>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

// A curve over `qps` whose bytes halve every 6 QPs from `bytes_at_qp0` (as an
// HEVC layer's roughly do) and whose SQNR falls 1 dB a QP.
LayerRateCurve Curve(const std::string& name, const std::vector<int>& qps,
                     double bytes_at_qp0) {
  LayerRateCurve curve{name, {}, 1};
  for (int qp : qps) {
    curve.points.push_back(RatePoint{
        qp, static_cast<uint64_t>(bytes_at_qp0 * std::exp2(-qp / 6.0)),
        60.0 - qp});
  }
  return curve;
}

// Every QP vector the search ran, and how often.
struct Runs {
  std::map<std::vector<int>, int> times;
  int total = 0;
};

// A measure (top-1-like) from the QPs: 100 points minus each layer's loss.
RunModel CountingRun(Runs* runs,
                     std::function<double(const std::vector<int>&)> measure) {
  return
      [runs, measure](const std::vector<int>& qps) -> absl::StatusOr<Measured> {
        ++runs->times[qps];
        ++runs->total;
        const double value = measure(qps);
        return Measured{value / 100.0, value};
      };
}

TEST(AccuracySearch, NoAllocationIsRunTwice) {
  // Two picture layers on a coarse grid: bisections at nearby budgets land on
  // the same allocation, and the descent steps onto allocations the
  // bisections measured.
  const std::vector<int> grid = {48, 40, 34, 30, 26, 22, 16, 8};
  SearchSpace space{
      {Curve("a", grid, 4e6), Curve("b", grid, 1e6)}, {0, 2}, 1000, 3};
  Runs runs;
  const auto measure = [](const std::vector<int>& qps) {
    return 100.0 - 0.002 * qps[0] * qps[0] - 0.001 * qps[2] * qps[2];
  };
  const absl::StatusOr<SearchResult> searched =
      SearchAllocation(space, 98.0, CountingRun(&runs, measure));
  ASSERT_THAT(searched, IsOk());
  const SearchResult& result = *searched;
  ASSERT_TRUE(result.best.has_value());
  EXPECT_GE(result.best->measured.measure, 98.0);
  for (const auto& [qps, times] : runs.times) {
    EXPECT_EQ(times, 1) << "QPs " << qps[0] << "," << qps[2] << " ran " << times
                        << " times";
  }
  // Probes and candidates are every run.
  EXPECT_EQ(result.probes + result.evaluations, runs.total);
}

TEST(AccuracySearch, TheDescentTriesPastOneMiss) {
  // One layer whose measure is not monotone in its QP (as top-1 on a small
  // bundle is not): QP 28 misses between 26 and 30, which meet; coarser than
  // 30 misses. The bisection closes on 26 (it never runs 30); the smallest
  // allocation that meets is QP 30, one grid step past the miss.
  SearchSpace space{{Curve("a", BudgetQpGrid(), 4e6)}, {0}, 0, 1};
  Runs runs;
  const auto measure = [](const std::vector<int>& qps) {
    return qps[0] == 30 || qps[0] <= 26 ? 99.0 : 90.0;
  };
  const absl::StatusOr<SearchResult> searched =
      SearchAllocation(space, 98.0, CountingRun(&runs, measure));
  ASSERT_THAT(searched, IsOk());
  ASSERT_TRUE(searched->best.has_value());
  EXPECT_EQ(searched->best->qps[0], 30);
}

TEST(AccuracySearch, AFinestAllocationThatMissesFindsNothing) {
  const std::vector<int> grid = {40, 30, 20, 10};
  SearchSpace space{
      {Curve("a", grid, 4e6), Curve("b", grid, 1e6)}, {0, 1}, 0, 2};
  Runs runs;
  const absl::StatusOr<SearchResult> searched = SearchAllocation(
      space, 98.0, CountingRun(&runs, [](const auto&) { return 50.0; }));
  ASSERT_THAT(searched, IsOk());
  const SearchResult& result = *searched;
  EXPECT_FALSE(result.best.has_value());
  EXPECT_EQ(result.finest.qps, (std::vector<int>{10, 10}));
  EXPECT_EQ(runs.total, 1);
}

TEST(AccuracySearch, ChoosesTheSmallestOfAMonotoneMeasure) {
  // Each layer loses a point past its own QP; layer b is more sensitive.
  const std::vector<int> grid = {51, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30,
                                 28, 26, 24, 22, 20, 18, 16, 13, 10, 7,  4};
  SearchSpace space{
      {Curve("a", grid, 4e6), Curve("b", grid, 4e6)}, {0, 1}, 0, 2};
  Runs runs;
  const auto measure = [](const std::vector<int>& qps) {
    return 100.0 - (qps[0] > 36 ? 1.0 : 0.0) - (qps[1] > 24 ? 1.0 : 0.0);
  };
  const absl::StatusOr<SearchResult> searched =
      SearchAllocation(space, 99.5, CountingRun(&runs, measure));
  ASSERT_THAT(searched, IsOk());
  const SearchResult& result = *searched;
  ASSERT_TRUE(result.best.has_value());
  EXPECT_EQ(result.best->qps, (std::vector<int>{36, 24}));
  EXPECT_LE(result.evaluations,
            2 * kMaxAccuracyEvaluations + kMaxDescentEvaluations);
}

}  // namespace
}  // namespace weightcast
