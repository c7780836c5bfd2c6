#include "common/pack/rate_allocation.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A layer whose SQNR rises 6 dB per doubling of its bytes, like a scalar
// quantizer, from `base_bytes` at QP 40 (and 6 dB per 6 QP).
LayerRateCurve Curve(const std::string& name, uint64_t base_bytes,
                     double base_db) {
  LayerRateCurve curve{name, {}};
  for (int k = 0; k < 4; ++k)
    curve.points.push_back({40 - 6 * k, base_bytes << k, base_db + 6.0 * k});
  return curve;
}

TEST(RateAllocation, EveryLayerAtItsCoarsestWhenTheBudgetIsTight) {
  auto a =
      AllocateBudget({Curve("a", 100, 10), Curve("b", 1000, 10)}, 50, 1150);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->qp, ElementsAre(40, 40));
  EXPECT_EQ(a->bytes, 1150u);
}

TEST(RateAllocation, SpendsBytesWhereTheyBuyTheMostPrecision) {
  // Doubling the small layer costs 100 bytes, the large one 1000, for the same
  // NSR saved.
  auto a = AllocateBudget({Curve("small", 100, 10), Curve("large", 1000, 10)},
                          0, 1500);
  ASSERT_TRUE(a.ok()) << a.status();
  // The small layer goes to 400 bytes (QP 28); the large one's first step
  // (+1000) does not fit.
  EXPECT_THAT(a->qp, ElementsAre(28, 40));
  EXPECT_EQ(a->bytes, 1400u);
}

TEST(RateAllocation, AMeasuredSensitivityMovesTheBytesToTheLayerItWeighs) {
  // Two layers alike in bytes and SQNR: unweighted, the one listed first gets
  // the one step the budget buys; weighted 20x, the second gets it (a step of
  // the heavy layer saves 20x the weighted NSR for the same bytes).
  const uint64_t budget = 100 + 100 + 100;
  auto plain =
      AllocateBudget({Curve("a", 100, 10), Curve("b", 100, 10)}, 0, budget);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->qp, ElementsAre(34, 40));
  LayerRateCurve heavy = Curve("b", 100, 10);
  heavy.weight = 20;
  auto weighted = AllocateBudget({Curve("a", 100, 10), heavy}, 0, budget);
  ASSERT_TRUE(weighted.ok()) << weighted.status();
  EXPECT_THAT(weighted->qp, ElementsAre(40, 34));
  // The reported distortion is the weighted sum: a at 10 dB, b at 16 dB.
  EXPECT_NEAR(weighted->nsr, 0.1 + 20 * NoiseToSignal(16), 1e-12);
  // A layer that barely matters stays coarsest, and the bytes an unweighted
  // allocation would share go to the layer that matters.
  const uint64_t enough_for_b = 100 + 800;
  auto shared = AllocateBudget({Curve("a", 100, 10), Curve("b", 100, 10)}, 0,
                               enough_for_b);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_THAT(shared->qp, ElementsAre(28, 28));
  LayerRateCurve negligible = Curve("a", 100, 10);
  negligible.weight = 1e-6;
  auto focused =
      AllocateBudget({negligible, Curve("b", 100, 10)}, 0, enough_for_b);
  ASSERT_TRUE(focused.ok()) << focused.status();
  EXPECT_THAT(focused->qp, ElementsAre(40, 22));
}

TEST(RateAllocation, AWeightThatIsNotFinitePositiveIsRefused) {
  for (double weight : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    LayerRateCurve curve = Curve("a", 100, 10);
    curve.weight = weight;
    auto a = AllocateBudget({curve}, 0, 1000);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << weight;
    EXPECT_THAT(a.status().message(), HasSubstr("layer a: weight")) << weight;
  }
}

// The curves' finest points (QP 22 on Curve's grid) and a model whose output
// distortion grows by `sensitivity[c]` x the NSR growth of curve c's layer.
struct ProbedModel {
  std::vector<double> sensitivity;
  std::vector<std::pair<size_t, int>> probes;  // (curve, qp) asked for
  double finest_cosine = 0.999;
  absl::StatusOr<double> CosineOf(const std::vector<LayerRateCurve>& curves,
                                  size_t c, int qp) {
    probes.emplace_back(c, qp);
    for (const RatePoint& point : curves[c].points) {
      if (point.qp != qp) continue;
      const double growth = NoiseToSignal(point.sqnr_db) -
                            NoiseToSignal(curves[c].points.back().sqnr_db);
      return finest_cosine - sensitivity[c] * growth;
    }
    return absl::InternalError("no such point");
  }
  // WeighBySensitivity on `curves` with this model, probing near 10 dB.
  absl::StatusOr<SensitivityProbes> Weigh(std::vector<LayerRateCurve>* curves) {
    return WeighBySensitivity(
        {22, 22}, finest_cosine, /*probe_db=*/10,
        [&](size_t c, int qp) { return CosineOf(*curves, c, qp); }, curves);
  }
};

TEST(SensitivityWeights, AreTheOutputsDistortionPerUnitOfEachLayersNsr) {
  std::vector<LayerRateCurve> curves = {Curve("a", 100, 10),
                                        Curve("b", 100, 10)};
  ProbedModel model{{0.5, 5.0}};
  auto probes = model.Weigh(&curves);
  ASSERT_TRUE(probes.ok()) << probes.status();
  EXPECT_EQ(probes->run, 2);
  EXPECT_TRUE(probes->weighted);
  // Each layer probed alone at its point nearest 10 dB: QP 40.
  EXPECT_THAT(model.probes, ElementsAre(std::pair<size_t, int>{0, 40},
                                        std::pair<size_t, int>{1, 40}));
  EXPECT_NEAR(curves[0].weight, 0.5, 1e-9);
  EXPECT_NEAR(curves[1].weight, 5.0, 1e-9);
}

TEST(SensitivityWeights, StayOneWhenNoProbeMovesTheOutputs) {
  std::vector<LayerRateCurve> curves = {Curve("a", 100, 10),
                                        Curve("b", 100, 10)};
  ProbedModel model{{0, 0}};
  auto probes = model.Weigh(&curves);
  ASSERT_TRUE(probes.ok()) << probes.status();
  EXPECT_EQ(probes->run, 2);
  EXPECT_FALSE(probes->weighted);
  EXPECT_EQ(curves[0].weight, 1);
  EXPECT_EQ(curves[1].weight, 1);
}

TEST(SensitivityWeights, ALayerThatDoesNotMatterGetsAThousandthNotZero) {
  std::vector<LayerRateCurve> curves = {Curve("a", 100, 10),
                                        Curve("b", 100, 10)};
  ProbedModel model{{0, 2.0}};
  auto probes = model.Weigh(&curves);
  ASSERT_TRUE(probes.ok()) << probes.status();
  EXPECT_NEAR(curves[0].weight, 2.0 / 1000, 1e-12);
  EXPECT_NEAR(curves[1].weight, 2.0, 1e-9);
  EXPECT_TRUE(AllocateBudget(curves, 0, 1000).ok());
}

TEST(SensitivityWeights, AFailedProbeIsTheError) {
  std::vector<LayerRateCurve> curves = {Curve("a", 100, 10),
                                        Curve("b", 100, 10)};
  auto probes = WeighBySensitivity(
      {22, 22}, 0.999, 10,
      [](size_t, int) -> absl::StatusOr<double> {
        return absl::UnavailableError("the server is shutting down");
      },
      &curves);
  EXPECT_EQ(probes.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(curves[0].weight, 1);
}

TEST(RateAllocation, NeverExceedsTheBudgetAndBeatsUniformAtEqualBytes) {
  const std::vector<LayerRateCurve> curves = {
      Curve("a", 300, 12), Curve("b", 2000, 8), Curve("c", 50, 20)};
  for (uint64_t budget : {2400u, 3000u, 5000u, 9000u, 20000u}) {
    auto a = AllocateBudget(curves, 10, budget);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_LE(a->bytes, budget);
    // The best uniform choice (same index on every curve) that fits.
    double uniform = 1e9;
    for (int k = 0; k < 4; ++k) {
      uint64_t bytes = 10;
      double nsr = 0;
      for (const auto& c : curves) {
        bytes += c.points[k].bytes;
        nsr += std::pow(10.0, -c.points[k].sqnr_db / 10);
      }
      if (bytes <= budget) uniform = std::min(uniform, nsr);
    }
    EXPECT_LE(a->nsr, uniform + 1e-12) << budget;
  }
}

TEST(RateAllocation, SkipsPointsOffTheConvexHull) {
  LayerRateCurve curve{"a",
                       {{40, 100, 10},
                        {34, 200, 10.5},
                        {28, 300, 22}}};  // QP 34 buys almost nothing
  auto a = AllocateBudget({curve}, 0, 250);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(
      a->qp,
      ElementsAre(
          40));  // the step to 300 does not fit, and 34 is not on the hull
  a = AllocateBudget({curve}, 0, 300);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->qp, ElementsAre(28));
}

TEST(RateAllocation, TooSmallABudgetSaysWhatTheModelNeeds) {
  auto a = AllocateBudget({Curve("a", 100, 10)}, 500, 550);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("600 bytes"));
}

TEST(RateAllocation, RateQpListsAreCheckedAndSortedCoarsestFirst) {
  auto qps = ParseRateQps("22,51,4,36");
  ASSERT_TRUE(qps.ok()) << qps.status();
  EXPECT_THAT(*qps, ElementsAre(51, 36, 22, 4));
  for (const char* bad : {"", "30", "0,30", "30,52", "30,,22", "30,x",
                          "30,22,30", "-1,30", "30\x1b[2J"}) {
    EXPECT_EQ(ParseRateQps(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_THAT(std::string(ParseRateQps("30,22,30").status().message()),
              HasSubstr("QP 30 is listed twice"));
  const std::string escaped(ParseRateQps("30,\x1b[2J").status().message());
  EXPECT_EQ(escaped.find('\x1b'), std::string::npos) << escaped;
}

}  // namespace
}  // namespace weightcast
