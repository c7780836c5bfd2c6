#include "common/pack/tier.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

TEST(Tier, ParsesTheDefaultLadder) {
  auto tiers = ParseTierList(kDefaultTierLadder);
  ASSERT_TRUE(tiers.ok());
  ASSERT_EQ(tiers->size(), 5u);
  EXPECT_EQ((*tiers)[0].picture_codec, LayerCodec::kZstdInt8);
  EXPECT_EQ((*tiers)[2].picture_codec, LayerCodec::kHevc);
  EXPECT_EQ((*tiers)[2].qp, 27);
}

TEST(Tier, RejectsUnknownAndRepeatedNames) {
  EXPECT_THAT(std::string(ParseTierList("q27,q99").status().message()),
              HasSubstr("q99"));
  EXPECT_THAT(std::string(ParseTierList("q27,q27").status().message()),
              HasSubstr("twice"));
  EXPECT_FALSE(ParseTier("qx").ok());
  EXPECT_TRUE(ParseTier("hevc-lossless")->lossless);
}

TEST(Tier, ParsesByteBudgets) {
  EXPECT_EQ(ParseTier("budget-2m")->budget_bytes, 2000000u);
  EXPECT_EQ(ParseTier("budget-1500")->budget_bytes, 1500u);
  EXPECT_EQ(ParseTier("budget-123456")->budget_bytes, 123456u);
  EXPECT_EQ(ParseTier("budget-2m")->picture_codec, LayerCodec::kHevc);
  for (const char* bad : {"budget-", "budget-0", "budget-m", "budget-2x",
                          "budget--3k", "budget-1e3"}) {
    EXPECT_THAT(std::string(ParseTier(bad).status().message()),
                HasSubstr("budget-N"))
        << bad;
  }
}

TEST(Tier, ParsesRefinementsOfACoarseTier) {
  auto tier = ParseTier("q37+q22");
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ(tier->qp, 22);
  EXPECT_EQ(tier->refines, "q37");
  EXPECT_EQ(tier->picture_codec, LayerCodec::kHevc);
  EXPECT_TRUE(ParseTier("q22")->refines.empty());
  EXPECT_EQ(RefinementTierName("q32", "q27").value(), "q32+q27");
  auto budget = ParseTier("budget-100k+q22");
  ASSERT_TRUE(budget.ok()) << budget.status();
  EXPECT_EQ(budget->refines, "budget-100k");
  EXPECT_EQ(budget->qp, 22);
  EXPECT_THAT(std::string(ParseTier("q22+q37").status().message()),
              HasSubstr("coarser"));
  EXPECT_THAT(std::string(ParseTier("q27+q27").status().message()),
              HasSubstr("coarser"));
  for (const char* bad :
       {"q37+", "+q22", "lossless+q22", "q37+budget-2m", "q37+q22+q12", "q+q2",
        "q-1", "budget-x+q22", "q22+budget-1m"}) {
    EXPECT_EQ(ParseTier(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(Tier, EachTierHasOneSpellingAndOthersNameIt) {
  const std::pair<const char*, const char*> respelled[] = {
      {"q022", "q22"},
      {"q00", "q0"},
      {"q27+q0022", "q27+q22"},
      {"q037+q22", "q37+q22"},
      {"budget-1.5k", "budget-1500"},
      {"budget-2000k", "budget-2m"},
      {"budget-0100k", "budget-100k"},
      {"budget-1000000", "budget-1m"},
      {"budget-100k+q022", "budget-100k+q22"},
      {"budget-0.001g", "budget-1m"}};
  for (const auto& [other, canonical] : respelled) {
    const absl::Status status = ParseTier(other).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << other;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("spelled '", canonical, "'")))
        << other;
    EXPECT_TRUE(ParseTier(canonical).ok()) << canonical;
  }
  EXPECT_EQ(BudgetTierName(2000000), "budget-2m");
  EXPECT_EQ(BudgetTierName(123456), "budget-123456");
  EXPECT_EQ(BudgetTierName(3000000000), "budget-3g");
}

// Each (other spelling, canonical) pair is refused naming the canonical one.
template <size_t N>
void ExpectRespelled(const std::pair<const char*, const char*> (&pairs)[N]) {
  for (const auto& [other, canonical] : pairs) {
    const absl::Status status = ParseTier(other).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << other;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("spelled '", canonical, "'")))
        << other;
  }
}

void ExpectRefused(std::initializer_list<const char*> names) {
  for (const char* bad : names) {
    EXPECT_EQ(ParseTier(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(Tier, ParsesAccuracyTiersInOneSpellingWithinBounds) {
  const std::pair<const char*, int> good[] = {
      {"acc-0.5", 50},  {"acc-1", 100},     {"acc-0", 0},
      {"acc-0.25", 25}, {"acc-12.3", 1230}, {"acc-100", 10000}};
  for (const auto& [name, hundredths] : good) {
    absl::StatusOr<TierSpec> tier = ParseTier(name);
    ASSERT_TRUE(tier.ok()) << name << ": " << tier.status();
    EXPECT_EQ(tier->max_top1_drop_hundredths, hundredths) << name;
    EXPECT_TRUE(IsAccuracyTier(*tier));
    EXPECT_EQ(tier->qp, 0);
    EXPECT_EQ(tier->budget_bytes, 0u);
    EXPECT_FALSE(CanBeRefined(*tier));
    EXPECT_EQ(AccuracyTierName(hundredths), name);
    // Every candidate is measured: float layers may be float16.
    EXPECT_EQ(tier->float_codec, LayerCodec::kFloat16) << name;
  }
  EXPECT_EQ(ParseTier("cos-0.99")->float_codec, LayerCodec::kFloat16);
  for (const char* other : {"q22", "lossless", "budget-2m", "q37+q22", "int8"})
    EXPECT_EQ(ParseTier(other)->float_codec, LayerCodec::kFloat32) << other;
  EXPECT_FALSE(IsAccuracyTier(*ParseTier("q22")));
  const std::pair<const char*, const char*> respelled[] = {
      {"acc-.5", "acc-0.5"},
      {"acc-0.50", "acc-0.5"},
      {"acc-1.0", "acc-1"},
      {"acc-01", "acc-1"},
      {"acc-100.00", "acc-100"}};
  ExpectRespelled(respelled);
  ExpectRefused({"acc-", "acc-100.01", "acc-101", "acc-0.125", "acc--1",
                 "acc-1.", "acc-1e1", "acc-0x1", "acc- 1", "acc-nan",
                 "acc-1000", "acc-0.5+q22", "q37+acc-1"});
  EXPECT_THAT(std::string(ParseTier("acc-101").status().message()),
              HasSubstr("0 to 100"));
}

TEST(Tier, ParsesCosineTiersInOneSpellingWithinBounds) {
  const std::pair<const char*, int> good[] = {
      {"cos-0.99", 9900},   {"cos-1", 10000},  {"cos-0", 0},
      {"cos-0.9995", 9995}, {"cos-0.5", 5000}, {"cos-0.0001", 1}};
  for (const auto& [name, ten_thousandths] : good) {
    absl::StatusOr<TierSpec> tier = ParseTier(name);
    ASSERT_TRUE(tier.ok()) << name << ": " << tier.status();
    EXPECT_EQ(tier->min_cosine_ten_thousandths, ten_thousandths) << name;
    EXPECT_EQ(tier->max_top1_drop_hundredths, -1) << name;
    EXPECT_TRUE(IsAccuracyTier(*tier));
    EXPECT_FALSE(CanBeRefined(*tier));
    EXPECT_EQ(CosineTierName(ten_thousandths), name);
  }
  const std::pair<const char*, const char*> respelled[] = {
      {"cos-.99", "cos-0.99"}, {"cos-0.990", "cos-0.99"}, {"cos-1.0", "cos-1"}};
  ExpectRespelled(respelled);
  for (const char* bad :
       {"cos-", "cos-1.0001", "cos-2", "cos-0.99999", "cos--0.5", "cos-0.",
        "cos-1e-2", "cos-10", "cos-nan", "cos-0.9+q22", "q37+cos-0.9"}) {
    const absl::Status status = ParseTier(bad).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(std::string(ParseTier("cos-2").status().message()),
              HasSubstr("0 to 1, at most four decimals"));
}

TEST(Tier, LongNamesAndLaddersAreRefusedWithoutEchoingThemWhole) {
  const std::string huge = "budget-" + std::string(100000, '0') + "1";
  const absl::Status status = ParseTier(huge).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("at most 64 characters"));
  EXPECT_LT(status.message().size(), 400u);
  std::string ladder;
  for (int qp = 0; qp <= 51; ++qp) absl::StrAppend(&ladder, "q", qp, ",");
  for (int k = 1; k <= 300; ++k) absl::StrAppend(&ladder, "budget-", k, "k,");
  EXPECT_THAT(std::string(ParseTierList(ladder).status().message()),
              HasSubstr("at most 256 tiers"));
}

}  // namespace
}  // namespace weightcast
