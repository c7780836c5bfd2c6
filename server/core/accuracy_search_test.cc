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

// A layer's bytes at `qp`: halving every 6 QPs from `bytes_at_qp0` (as an
// HEVC layer's roughly do).
uint64_t BytesAt(int qp, double bytes_at_qp0) {
  return static_cast<uint64_t>(bytes_at_qp0 * std::exp2(-qp / 6.0));
}

// A curve over `qps` with BytesAt's bytes, whose SQNR falls 1 dB a QP.
LayerRateCurve Curve(const std::string& name, const std::vector<int>& qps,
                     double bytes_at_qp0) {
  LayerRateCurve curve{name, {}, 1};
  for (int qp : qps)
    curve.points.push_back(RatePoint{qp, BytesAt(qp, bytes_at_qp0), 60.0 - qp});
  return curve;
}

// Every QP vector the search ran, and how often.
struct Runs {
  std::map<std::vector<int>, int> times;
  int total = 0;
};

// A runner that counts its runs, measures with `measure` and reports the
// bytes of `space`'s curves at any QP (BytesAt of each curve's bytes at QP 0,
// `bytes_at_qp0`, one per curve) plus its fixed bytes.
RunModel CountingRun(Runs* runs, const SearchSpace& space,
                     std::vector<double> bytes_at_qp0,
                     std::function<double(const std::vector<int>&)> measure) {
  return [runs, space, bytes_at_qp0,
          measure](const std::vector<int>& qps) -> absl::StatusOr<Measured> {
    ++runs->times[qps];
    ++runs->total;
    uint64_t bytes = space.fixed;
    for (size_t c = 0; c < space.curves.size(); ++c)
      bytes += BytesAt(qps[space.tensor_of[c]], bytes_at_qp0[c]);
    const double value = measure(qps);
    return Measured{value / 100.0, value, bytes};
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
  const absl::StatusOr<SearchResult> searched = SearchAllocation(
      space, 98.0, CountingRun(&runs, space, {4e6, 1e6}, measure));
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
      SearchAllocation(space, 98.0, CountingRun(&runs, space, {4e6}, measure));
  ASSERT_THAT(searched, IsOk());
  ASSERT_TRUE(searched->best.has_value());
  EXPECT_EQ(searched->best->qps[0], 30);
}

TEST(AccuracySearch, TheDescentTriesTheQpHalfwayToAMiss) {
  // The grid steps 4 QPs at 30 -> 34; QP 32 and finer meet. The QP halfway
  // is off the grid: the runner's reported bytes are the candidate's.
  const std::vector<int> grid = {51, 40, 34, 30, 26, 22, 16, 8};
  SearchSpace space{{Curve("a", grid, 4e6)}, {0}, 100, 1};
  const auto measure = [](const std::vector<int>& qps) {
    return qps[0] <= 32 ? 99.0 : 90.0;
  };
  Runs runs;
  const absl::StatusOr<SearchResult> searched =
      SearchAllocation(space, 98.0, CountingRun(&runs, space, {4e6}, measure));
  ASSERT_THAT(searched, IsOk());
  ASSERT_TRUE(searched->best.has_value());
  EXPECT_EQ(searched->best->qps[0], 32);
  EXPECT_EQ(searched->best->bytes, 100 + BytesAt(32, 4e6));
  // A runner that reports no bytes keeps the search on the grid.
  const RunModel counting = CountingRun(&runs, space, {4e6}, measure);
  const absl::StatusOr<SearchResult> on_grid = SearchAllocation(
      space, 98.0,
      [&](const std::vector<int>& qps) -> absl::StatusOr<Measured> {
        absl::StatusOr<Measured> measured = counting(qps);
        if (measured.ok()) measured->bytes = 0;
        return measured;
      });
  ASSERT_THAT(on_grid, IsOk());
  ASSERT_TRUE(on_grid->best.has_value());
  EXPECT_EQ(on_grid->best->qps[0], 30);
}

TEST(AccuracySearch, AFinestAllocationThatMissesFindsNothing) {
  const std::vector<int> grid = {40, 30, 20, 10};
  SearchSpace space{
      {Curve("a", grid, 4e6), Curve("b", grid, 1e6)}, {0, 1}, 0, 2};
  Runs runs;
  const absl::StatusOr<SearchResult> searched = SearchAllocation(
      space, 98.0,
      CountingRun(&runs, space, {4e6, 1e6}, [](const auto&) { return 50.0; }));
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
  const absl::StatusOr<SearchResult> searched = SearchAllocation(
      space, 99.5, CountingRun(&runs, space, {4e6, 4e6}, measure));
  ASSERT_THAT(searched, IsOk());
  const SearchResult& result = *searched;
  ASSERT_TRUE(result.best.has_value());
  EXPECT_EQ(result.best->qps, (std::vector<int>{36, 24}));
  EXPECT_LE(result.evaluations,
            2 * kMaxAccuracyEvaluations + kMaxDescentEvaluations);
}

}  // namespace
}  // namespace weightcast
