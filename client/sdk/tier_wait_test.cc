#include "client/sdk/tier_wait.h"

#include <deque>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TierSummary Tier(std::string name, std::string state, uint64_t bytes = 0,
                 bool measured = false) {
  TierSummary t;
  t.name = std::move(name);
  t.state = std::move(state);
  t.bytes = bytes;
  if (measured) t.accuracy = AccuracyFigures{90, 95, 64};
  return t;
}

ModelInfo Info(std::vector<TierSummary> tiers, bool bundle = false) {
  ModelInfo info;
  info.model = "hres";
  info.version = "v1";
  info.tiers = std::move(tiers);
  info.has_eval_bundle = bundle;
  if (bundle) info.reference_accuracy = AccuracyFigures{91, 96, 64};
  return info;
}

// A server seen through Describe and Warm only: each Describe returns the next
// description (the last one again when they run out).
class FakeClient final : public Client {
 public:
  explicit FakeClient(std::deque<ModelInfo> descriptions,
                      absl::Status warm = absl::OkStatus())
      : descriptions_(std::move(descriptions)), warm_(std::move(warm)) {}
  absl::StatusOr<ModelInfo> Describe(const std::string&,
                                     const std::string& version) override {
    versions_asked.push_back(version);
    ModelInfo info = descriptions_.front();
    if (descriptions_.size() > 1) descriptions_.pop_front();
    return info;
  }
  absl::Status Warm(const std::string&, const std::string&,
                    const std::vector<std::string>& tiers) override {
    ++warms;
    EXPECT_TRUE(tiers.empty());  // the whole ladder
    return warm_;
  }
  absl::StatusOr<ModelInfo> Register(const RegisterOptions&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::vector<std::string>>>>
  List() override {
    return absl::UnimplementedError("");
  }
  absl::Status Delete(const std::string&, const std::string&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<bool> Health(absl::Duration) override { return true; }
  absl::Status Watch(const WatchOptions&,
                     const std::function<void(const AssignmentInfo&)>&,
                     const std::function<void()>&) override {
    return absl::UnimplementedError("");
  }
  absl::Status ReportStatus(const DeviceStatusReport&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<RolloutInfo> StartRollout(
      const std::string&, const std::string&, double,
      const std::vector<std::string>&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<RolloutInfo> UpdateRollout(const std::string&,
                                            const RolloutUpdate&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<RolloutInfo> RollbackRollout(const std::string&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<RolloutInfo> GetRollout(const std::string&) override {
    return absl::UnimplementedError("");
  }
  absl::StatusOr<PullResult> Pull(const PullOptions&) override {
    return absl::UnimplementedError("");
  }

  int warms = 0;
  std::vector<std::string> versions_asked;

 private:
  std::deque<ModelInfo> descriptions_;
  const absl::Status warm_;
};

TEST(PendingTiers, CountsWhatABoundedSelectionWaitsFor) {
  const ModelInfo info =
      Info({Tier("lossless", "READY", 900), Tier("q27", "ENCODING"),
            Tier("q37", "NOT_ENCODED"), Tier("q37+q27", "NOT_ENCODED")},
           /*bundle=*/true);
  EXPECT_EQ(PendingTiers(info, {.max_bytes = 500}, true), 2);
  EXPECT_EQ(PendingTiers(info, {.max_bytes = 500}, false), 1);
  // By accuracy, READY tiers not yet measured count too.
  EXPECT_EQ(PendingTiers(info, {.max_accuracy_drop = 1}, true), 3);
  // ... unless the server said why it could not measure one.
  ModelInfo unmeasurable = info;
  unmeasurable.tiers[0].error = "accuracy not measured: ...";
  EXPECT_EQ(PendingTiers(unmeasurable, {.max_accuracy_drop = 1}, true), 2);
  // By name or by nothing: the server encodes the tier on the pull.
  EXPECT_EQ(PendingTiers(info, {.name = "q27"}, true), 0);
  EXPECT_EQ(PendingTiers(info, {}, true), 0);
}

TEST(DescribeAndSelectTier, WarmsTheLadderAndWaitsForEverySize) {
  FakeClient client(
      {Info({Tier("q27", "NOT_ENCODED"), Tier("q37", "NOT_ENCODED")}),
       Info({Tier("q27", "ENCODING"), Tier("q37", "READY", 300)}),
       Info({Tier("q27", "READY", 800), Tier("q37", "READY", 300)})});
  PullOptions options;
  options.model = "hres";  // version "latest"
  options.tier.max_bytes = 1000;
  std::vector<int> pending;
  options.progress = [&](const PullProgress& p) {
    pending.push_back(p.tiers_pending);
  };
  auto selected =
      DescribeAndSelectTier(client, options, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(selected.ok()) << selected.status();
  // Not q37, the only size known at first: the answer does not depend on when
  // the pull came.
  EXPECT_EQ(selected->second, "q27");
  EXPECT_EQ(client.warms, 1);
  EXPECT_THAT(pending, ElementsAre(2, 1));
  // The version the first Describe found, not "latest" again.
  EXPECT_THAT(client.versions_asked, ElementsAre("latest", "v1", "v1"));
}

TEST(DescribeAndSelectTier, ADeviceThatMayNotWarmWaitsForEncodingTiersOnly) {
  FakeClient client(
      {Info({Tier("q27", "NOT_ENCODED"), Tier("q37", "ENCODING")}),
       Info({Tier("q27", "NOT_ENCODED"), Tier("q37", "READY", 300)})},
      absl::PermissionDeniedError("devices may not warm"));
  PullOptions options;
  options.model = "hres";
  options.tier.max_bytes = 1000;
  auto selected =
      DescribeAndSelectTier(client, options, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_EQ(selected->second, "q37");
  EXPECT_EQ(client.warms, 1);
}

TEST(DescribeAndSelectTier, ATierEvictedAgainAfterTheWarmIsNotWaitedFor) {
  // Warm marks tiers ENCODING before it returns: NOT_ENCODED afterwards means
  // the server's cache budget evicted it again; waiting would never end.
  FakeClient client(
      {Info({Tier("q27", "NOT_ENCODED"), Tier("q37", "NOT_ENCODED")}),
       Info({Tier("q27", "NOT_ENCODED"), Tier("q37", "READY", 300)})});
  PullOptions options;
  options.model = "hres";
  options.tier.max_bytes = 1000;
  auto selected =
      DescribeAndSelectTier(client, options, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_EQ(selected->second, "q37");
  EXPECT_EQ(client.warms, 1);
}

TEST(DescribeAndSelectTier, GivesUpAtTheDeadlineSayingWhatItWaitedFor) {
  FakeClient client({Info({Tier("q27", "ENCODING")})});
  PullOptions options;
  options.model = "hres";
  options.tier.max_bytes = 1000;
  EXPECT_THAT(DescribeAndSelectTier(client, options,
                                    absl::Now() + absl::Milliseconds(300)),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr("1 tier(s) of hres/v1")));
}

TEST(DescribeAndSelectTier, ByNameDoesNotWait) {
  FakeClient client({Info({Tier("q27", "NOT_ENCODED")})});
  PullOptions options;
  options.model = "hres";
  options.tier.name = "q27";
  auto selected = DescribeAndSelectTier(client, options, absl::Now());
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_EQ(selected->second, "q27");
  EXPECT_EQ(client.warms, 0);
}

}  // namespace
}  // namespace weightcast
