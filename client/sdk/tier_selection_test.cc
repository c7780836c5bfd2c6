// SelectTier on ModelInfo literals: no server.
#include <string>

#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

TierSummary Tier(const std::string& name, const std::string& state,
                 uint64_t bytes, double worst_sqnr_db,
                 std::optional<double> top1 = std::nullopt) {
  TierSummary tier;
  tier.name = name;
  tier.state = state;
  tier.bytes = bytes;
  tier.worst_sqnr_db = worst_sqnr_db;
  tier.worst_layer_sqnr_db =
      worst_sqnr_db;  // every layer, what --min-sqnr bounds
  if (top1) tier.accuracy = AccuracyFigures{*top1, 0, 1000};
  return tier;
}

// A version whose ladder is lossless, q22, q32 (READY), q42 (not encoded), with
// a refinement.
ModelInfo Info() {
  ModelInfo info;
  info.model = "mlp";
  info.version = "v1";
  info.reference_accuracy = AccuracyFigures{90.0, 97.0, 1000};
  info.tiers = {Tier("lossless", "READY", 400'000, 99, 90.0),
                Tier("q22", "READY", 120'000, 40, 89.6),
                Tier("q32", "READY", 50'000, 30, 88.0),
                Tier("q42", "NOT_ENCODED", 0, 0),
                Tier("q32+q22", "READY", 30'000, 40)};
  return info;
}

TEST(SelectTier, ANamedTierOfTheLadderOrARefinementOfOneIsTaken) {
  EXPECT_THAT(SelectTier(Info(), {"q32"}), IsOkAndHolds("q32"));
  EXPECT_THAT(SelectTier(Info(), {"q42"}),
              IsOkAndHolds("q42"));  // not encoded yet: the server encodes it
  EXPECT_THAT(SelectTier(Info(), {"q22+q12"}),
              IsOkAndHolds("q22+q12"));  // added on first request
  EXPECT_THAT(SelectTier(Info(), {"q27"}),
              StatusIs(absl::StatusCode::kNotFound,
                       "tier 'q27' is not in the ladder of mlp/v1"));
  EXPECT_THAT(SelectTier(Info(), {"q27+q12"}),
              StatusIs(absl::StatusCode::kNotFound));
  // Accuracy tiers are added by the server on request; another spelling of a
  // tier is named here.
  EXPECT_THAT(SelectTier(Info(), {"acc-0.5"}), IsOkAndHolds("acc-0.5"));
  EXPECT_THAT(SelectTier(Info(), {"acc-0.50"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spelled 'acc-0.5'")));
  TierSelector name_wins;
  name_wins.name = "lossless";
  name_wins.max_bytes = 1;
  EXPECT_THAT(SelectTier(Info(), name_wins), IsOkAndHolds("lossless"));
}

TEST(SelectTier, WithoutCriteriaTheFirstLadderTierIsTaken) {
  EXPECT_THAT(SelectTier(Info(), {}), IsOkAndHolds("lossless"));
  EXPECT_THAT(
      SelectTier(ModelInfo{}, {}),
      StatusIs(absl::StatusCode::kNotFound, "the version has no tiers"));
}

TEST(SelectTier, AByteBudgetTakesTheLargestReadyTierThatFits) {
  TierSelector selector;
  selector.max_bytes = 400'000;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("lossless"));
  selector.max_bytes = 399'999;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q22"));
  selector.max_bytes = 119'999;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q32"));
  // Neither q42 (not encoded) nor the refinement (its bytes leave out its
  // coarse tier's) counts.
  selector.max_bytes = 49'999;
  EXPECT_THAT(
      SelectTier(Info(), selector),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("no encoded tier of mlp/v1 fits 49999 bytes")));
}

TEST(SelectTier, AnSqnrFloorTakesTheLargestTierAboveIt) {
  TierSelector selector;
  selector.min_sqnr_db = 35;
  selector.max_bytes = 399'999;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q22"));
  selector.max_bytes = 119'999;
  EXPECT_THAT(
      SelectTier(Info(), selector),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("with SQNR >= 35 dB")));
}

TEST(SelectTier, ALinkSpeedAndADeadlineMakeAByteBudget) {
  TierSelector selector;
  selector.bits_per_second = 8'000;  // 1000 bytes a second
  selector.within = absl::Seconds(120);
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q22"));
  selector.within = absl::Seconds(119);
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q32"));
  selector.max_bytes = 10'000;  // the tighter bound wins
  EXPECT_THAT(
      SelectTier(Info(), selector),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("fits 10000 bytes")));
}

TEST(SelectTier, AnAccuracyDropTakesTheSmallestMeasuredTierWithinIt) {
  TierSelector selector;
  selector.max_accuracy_drop = 0.5;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q22"));
  selector.max_accuracy_drop = 5;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("q32"));
  selector.max_accuracy_drop = 0;
  EXPECT_THAT(SelectTier(Info(), selector), IsOkAndHolds("lossless"));
  ModelInfo unmeasured = Info();
  for (TierSummary& t : unmeasured.tiers) t.accuracy.reset();
  EXPECT_THAT(SelectTier(unmeasured, selector),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("with top-1 >= 90.00 %")));
  unmeasured.reference_accuracy.reset();
  EXPECT_THAT(SelectTier(unmeasured, selector),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("register it with an evaluation bundle")));
}

TEST(SelectTier, AnOutputCosineFloorTakesTheSmallestTierAboveItLabelsOrNot) {
  ModelInfo info = Info();  // an embedding model: no labels
  info.reference_accuracy->labelled = false;
  const double cosines[] = {1.0, 0.995, 0.97};
  for (size_t i = 0; i < 3; ++i) {
    info.tiers[i].accuracy->labelled = false;
    info.tiers[i].accuracy->output_cosine = cosines[i];
  }
  TierSelector selector;
  selector.min_output_cosine = 0.99;
  EXPECT_THAT(SelectTier(info, selector), IsOkAndHolds("q22"));
  selector.min_output_cosine = 0.9;
  EXPECT_THAT(SelectTier(info, selector), IsOkAndHolds("q32"));
  selector.min_output_cosine = 0.999999;
  EXPECT_THAT(SelectTier(info, selector), IsOkAndHolds("lossless"));
  // Tiers measured before the cosine was do not count.
  info.tiers[0].accuracy->output_cosine.reset();
  EXPECT_THAT(SelectTier(info, selector),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("with output cosine >= 1.0000")));
  // Without labels there is no top-1 to lose.
  TierSelector by_top1;
  by_top1.max_accuracy_drop = 1;
  EXPECT_THAT(
      SelectTier(info, by_top1),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no labels")));
}

}  // namespace
}  // namespace weightcast
