// Fleet assignment without a server: a real FleetRegistry in a fresh directory,
// subscriptions drained directly.
#include "server/push/fleet.h"

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/postgres_process.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

class FleetTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Where a new, empty fleet registry lives for this test's engine.
  std::string Location(const std::string& dir) {
    absl::StatusOr<std::string> url =
        FreshRegistryLocation(GetParam(), dir + "/fleet.db", "fleet");
    EXPECT_THAT(url, IsOk());
    return url.value_or("postgresql://unavailable");
  }

  void SetUp() override {
    const std::string dir = FreshDir(
        std::string("fleet_") +
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    registry_ = FleetRegistry::Open(Location(dir)).value();
    fleet_ = NewFleet();
  }
  std::unique_ptr<Fleet> NewFleet() {
    return Fleet::Create(
               registry_.get(),
               [](const std::string& model, const std::string& version) {
                 if (model == "mlp" &&
                     (version == "v1" || version == "v2" || version == "v3"))
                   return absl::OkStatus();
                 return absl::NotFoundError(model + "/" + version +
                                            " is not registered");
               })
        .value();
  }

  std::shared_ptr<Subscription> Watch(
      const std::string& device, std::vector<std::string> groups = {},
      std::map<std::string, std::string> installed = {}) {
    WatchSpec spec{
        device, std::move(groups), {"mlp"}, "", std::move(installed)};
    auto subscription = fleet_->Subscribe(std::move(spec));
    EXPECT_THAT(subscription, IsOk());
    return subscription.ok() ? *subscription : nullptr;
  }

  // The versions queued for `subscription`, oldest first ("" none).
  static std::vector<std::string> Drain(Subscription& subscription) {
    std::vector<std::string> versions;
    while (std::optional<AssignmentEvent> event =
               subscription.Next(absl::ZeroDuration())) {
      versions.push_back(event->version);
    }
    return versions;
  }
  // The one version queued, or "" when none is.
  static std::string Assigned(Subscription& subscription) {
    const std::vector<std::string> versions = Drain(subscription);
    EXPECT_LE(versions.size(), 1u);
    return versions.empty() ? "" : versions.back();
  }

  std::unique_ptr<FleetRegistry> registry_;
  std::unique_ptr<Fleet> fleet_;
};

// Every test runs against both engines: SQLite in the test's directory, and a
// fresh database on a real PostgreSQL server this binary starts.
INSTANTIATE_TEST_SUITE_P(Engines, FleetTest,
                         ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

std::vector<std::string> Devices(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("dev-" + std::to_string(i));
  return ids;
}

TEST(RolloutBucket, IsStablePerModelAndDeviceAndWithin0To9999) {
  EXPECT_EQ(RolloutBucket("mlp", "dev-1"), RolloutBucket("mlp", "dev-1"));
  int differ = 0;
  for (const std::string& id : Devices(100)) {
    const int bucket = RolloutBucket("mlp", id);
    EXPECT_GE(bucket, 0);
    EXPECT_LT(bucket, 10000);
    differ += bucket != RolloutBucket("cnn", id);
  }
  EXPECT_GT(differ, 90);  // another model puts a device elsewhere
}

TEST_P(FleetTest,
       DevicesBelowTheRolloutPercentGetTheTargetAndTheRestTheBaseline) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 30, {}), IsOk());
  int in = 0;
  for (const std::string& id : Devices(200)) {
    auto watch = Watch(id);
    const bool expected_in = RolloutBucket("mlp", id) < 3000;
    in += expected_in;
    std::optional<AssignmentEvent> event = watch->Next(absl::ZeroDuration());
    ASSERT_TRUE(event.has_value()) << id;
    EXPECT_EQ(event->version, expected_in ? "v2" : "v1") << id;
    EXPECT_EQ(event->reason, expected_in ? AssignmentReason::kRollout
                                         : AssignmentReason::kBaseline)
        << id;
  }
  EXPECT_GT(in, 30);  // about 60 of 200
  EXPECT_LT(in, 90);
}

TEST_P(FleetTest, RaisingThePercentageMovesOnlyTheDevicesNewlyIn) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 20, {}), IsOk());
  std::map<std::string, std::shared_ptr<Subscription>> watches;
  for (const std::string& id : Devices(100)) {
    watches[id] = Watch(id);
    EXPECT_EQ(Assigned(*watches[id]),
              RolloutBucket("mlp", id) < 2000 ? "v2" : "v1");
  }
  RolloutChange raise;
  raise.percent = 40;
  ASSERT_THAT(fleet_->UpdateRollout("mlp", raise), IsOk());
  for (const auto& [id, watch] : watches) {
    const int bucket = RolloutBucket("mlp", id);
    EXPECT_EQ(Assigned(*watch), bucket >= 2000 && bucket < 4000 ? "v2" : "")
        << id << " bucket " << bucket;
  }
}

TEST_P(FleetTest, ADeviceInANamedGroupIsInTheRolloutWhateverItsBucket) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 0, {"canary"}), IsOk());
  EXPECT_EQ(Assigned(*Watch("dev-1", {"lab", "canary"})), "v2");
  EXPECT_EQ(Assigned(*Watch("dev-2", {"lab"})), "v1");
  EXPECT_EQ(Assigned(*Watch("dev-3")), "v1");

  auto moved = Watch("dev-4", {"beta"});
  EXPECT_EQ(Assigned(*moved), "v1");
  RolloutChange groups;
  groups.groups = std::vector<std::string>{"canary", "beta"};
  ASSERT_THAT(fleet_->UpdateRollout("mlp", groups), IsOk());
  EXPECT_EQ(Assigned(*moved), "v2");
}

TEST_P(FleetTest, APausedRolloutKeepsEachDeviceWhereItIs) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 0, {}), IsOk());
  ASSERT_THAT(fleet_->Report({"dev-fetching", "mlp", "v2", "", "DOWNLOADING"}),
              IsOk());
  ASSERT_THAT(
      fleet_->Report({"dev-failed", "mlp", "v2", "", "FAILED", "disk full"}),
      IsOk());
  RolloutChange pause;
  pause.paused = true;
  pause.percent = 100;  // raised while paused: nobody new starts v2
  ASSERT_THAT(fleet_->UpdateRollout("mlp", pause), IsOk());
  auto installed = Watch("dev-installed", {}, {{"mlp", "v2"}});
  auto fetching = Watch("dev-fetching");
  auto failed = Watch("dev-failed");
  auto fresh = Watch("dev-fresh");
  EXPECT_EQ(Assigned(*installed),
            "");  // it holds v2 and keeps it: nothing to send
  EXPECT_EQ(Assigned(*fetching), "v2");
  EXPECT_EQ(Assigned(*failed), "v1");
  EXPECT_EQ(Assigned(*fresh), "v1");

  RolloutChange resume;
  resume.paused = false;
  ASSERT_THAT(fleet_->UpdateRollout("mlp", resume), IsOk());
  EXPECT_EQ(Assigned(*installed), "");
  EXPECT_EQ(Assigned(*fetching), "");
  EXPECT_EQ(Assigned(*failed), "v2");
  EXPECT_EQ(Assigned(*fresh), "v2");
}

TEST_P(FleetTest, RollbackSendsEveryDeviceTheBaseline) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  auto view = fleet_->StartRollout("mlp", "v2", 100, {});
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->rollout.baseline, "v1");
  auto watch = Watch("dev-1");
  EXPECT_EQ(Assigned(*watch), "v2");

  auto rolled_back = fleet_->Rollback("mlp");
  ASSERT_THAT(rolled_back, IsOk());
  EXPECT_EQ(rolled_back->rollout.state, RolloutState::kRolledBack);
  std::optional<AssignmentEvent> event = watch->Next(absl::ZeroDuration());
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->version, "v1");
  EXPECT_EQ(event->reason, AssignmentReason::kRollback);
  EXPECT_EQ(Assigned(*Watch("dev-late")), "v1");

  RolloutChange raise;
  raise.percent = 50;
  EXPECT_THAT(fleet_->UpdateRollout("mlp", raise),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("was rolled back; start a new one")));
  // The next rollout starts from the version devices were returned to.
  auto next = fleet_->StartRollout("mlp", "v3", 0, {});
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->rollout.baseline, "v1");
}

TEST_P(FleetTest, ARollbackNeedsAnEarlierVersion) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  EXPECT_THAT(fleet_->Rollback("mlp"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("has no earlier version to return to")));
  EXPECT_THAT(fleet_->Rollback("cnn"), StatusIs(absl::StatusCode::kNotFound,
                                                HasSubstr("has no rollout")));
}

TEST_P(FleetTest, RolloutsAreCheckedAndSurviveARestart) {
  EXPECT_THAT(fleet_->StartRollout("mlp", "v1", 100.5, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(fleet_->StartRollout("mlp", "latest", 10, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a rollout names a version label")));
  EXPECT_THAT(fleet_->StartRollout("mlp", "v9", 10, {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("v9")));
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 25, {"canary"}), IsOk());

  fleet_ = NewFleet();
  auto view = fleet_->GetRollout("mlp");
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->rollout.version, "v2");
  EXPECT_EQ(view->rollout.baseline, "v1");
  EXPECT_EQ(view->rollout.percent, 25);
  EXPECT_THAT(view->rollout.groups, testing::ElementsAre("canary"));
  EXPECT_EQ(Assigned(*Watch("dev-0", {"canary"})), "v2");
}

TEST_P(FleetTest, AnEventNotYetSentIsReplacedByTheNextOfItsModel) {
  auto watch = Watch("dev-1");
  EXPECT_EQ(Assigned(*watch), "");  // no rollout yet
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 100, {}), IsOk());
  EXPECT_EQ(Drain(*watch), std::vector<std::string>{"v2"});
  auto view = fleet_->GetRollout("mlp");
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->subscribers, 1u);
  fleet_->Unsubscribe(watch);
  EXPECT_EQ(fleet_->GetRollout("mlp")->subscribers, 0u);
}

TEST_P(FleetTest, WatchesAndReportsAreChecked) {
  EXPECT_THAT(
      fleet_->Subscribe({"dev 1", {}, {"mlp"}}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device_id")));
  EXPECT_THAT(fleet_->Subscribe({"dev-1", {}, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "a watch names at least one model"));
  EXPECT_THAT(fleet_->Report({"dev-1", "mlp", "v1", "", "DONE"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("DOWNLOADING, INSTALLED or FAILED")));
  EXPECT_THAT(fleet_->Report({"dev-1", "mlp", "v1", "q027", "INSTALLED"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(fleet_->Report({"dev-1", "mlp", "v1", "", "FAILED",
                              std::string(kMaxReportReasonBytes + 1, 'x')}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reason is 1025 bytes")));
  EXPECT_THAT(fleet_->Report({"dev-1", "mlp", "v7", "", "INSTALLED"}),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("a report about mlp/v7")));
  ASSERT_THAT(
      fleet_->Report({"dev-1", "mlp", "v1", "q27", "FAILED", "bad\nline"}),
      IsOk());
  auto stored = registry_->GetDevice("dev-1", "mlp");
  ASSERT_THAT(stored, IsOk());
  ASSERT_TRUE(stored->has_value());
  EXPECT_EQ((*stored)->reason, "bad\\x0aline");  // stored as it will be shown
}

TEST_P(FleetTest, ShutdownClosesEveryWatchAndRefusesNewOnes) {
  auto watch = Watch("dev-1");
  fleet_->Shutdown();
  EXPECT_TRUE(watch->closed());
  EXPECT_FALSE(watch->Next(absl::Seconds(5)).has_value());  // returns at once
  EXPECT_THAT(fleet_->Subscribe({"dev-2", {}, {"mlp"}}),
              StatusIs(absl::StatusCode::kUnavailable));
}

// A listener that counts its wakes.
class CountingListener : public SubscriptionListener {
 public:
  void OnSubscriptionReady() override { wakes.fetch_add(1); }
  std::atomic<int> wakes{0};
};

TEST_P(FleetTest, AListenerHearsOfEachChangeForItsDeviceAndOfTheClose) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  auto listener = std::make_shared<CountingListener>();
  auto watch = fleet_->Subscribe({"dev-1", {}, {"mlp"}}, listener);
  ASSERT_THAT(watch, IsOk());
  EXPECT_EQ(listener->wakes.load(), 0);  // the first assignment is queued
  EXPECT_EQ(Assigned(**watch), "v1");

  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 100, {}), IsOk());
  EXPECT_EQ(listener->wakes.load(), 1);
  EXPECT_EQ(Assigned(**watch), "v2");
  RolloutChange same;
  same.percent = 100;  // nothing changes for the device: no wake
  ASSERT_THAT(fleet_->UpdateRollout("mlp", same), IsOk());
  EXPECT_EQ(listener->wakes.load(), 1);

  fleet_->Shutdown();
  EXPECT_EQ(listener->wakes.load(), 2);
  EXPECT_TRUE((*watch)->closed());
}

TEST_P(FleetTest, AListenerThatIsGoneIsNotCalled) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  auto listener = std::make_shared<CountingListener>();
  auto watch = fleet_->Subscribe({"dev-1", {}, {"mlp"}}, listener);
  ASSERT_THAT(watch, IsOk());
  listener.reset();
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 100, {}), IsOk());
  EXPECT_EQ(Assigned(**watch), "v2");
}

TEST_P(FleetTest, APausedRolloutRemembersReportsAcrossARestartAndNewTargets) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  // Reported before the rollout of v2 exists: found when it starts.
  ASSERT_THAT(fleet_->Report({"dev-early", "mlp", "v2", "", "INSTALLED"}),
              IsOk());
  ASSERT_THAT(fleet_->StartRollout("mlp", "v2", 100, {}), IsOk());
  ASSERT_THAT(fleet_->Report({"dev-late", "mlp", "v2", "", "DOWNLOADING"}),
              IsOk());
  RolloutChange pause;
  pause.paused = true;
  ASSERT_THAT(fleet_->UpdateRollout("mlp", pause), IsOk());
  EXPECT_EQ(Assigned(*Watch("dev-early")), "v2");
  EXPECT_EQ(Assigned(*Watch("dev-late")), "v2");
  EXPECT_EQ(Assigned(*Watch("dev-new")), "v1");

  fleet_.reset();  // a restart: the reports come back from fleet.db
  fleet_ = NewFleet();
  EXPECT_EQ(Assigned(*Watch("dev-early")), "v2");
  EXPECT_EQ(Assigned(*Watch("dev-late")), "v2");
  // A later FAILED report takes the device out.
  ASSERT_THAT(fleet_->Report({"dev-late", "mlp", "v2", "", "FAILED", "disk"}),
              IsOk());
  EXPECT_EQ(Assigned(*Watch("dev-late")), "v1");
}

TEST_P(FleetTest, ReportsFromManyThreadsAreStoredInBatches) {
  ASSERT_THAT(fleet_->StartRollout("mlp", "v1", 100, {}), IsOk());
  constexpr int kDevices = 400;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kDevices; i += 8) {
        ok += fleet_
                  ->Report({"dev-" + std::to_string(i), "mlp", "v1", "",
                            "INSTALLED"})
                  .ok();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kDevices);
  auto view = fleet_->GetRollout("mlp");
  ASSERT_THAT(view, IsOk());
  ASSERT_EQ(view->counts.size(), 1u);
  EXPECT_EQ(view->counts[0].devices, uint64_t{kDevices});
}
TEST_P(FleetTest, AWatchIsBoundedInModelsGroupsAndNames) {
  std::vector<std::string> models(kMaxWatchedModels + 1, "mlp");
  EXPECT_THAT(fleet_->Subscribe({"dev-1", {}, models}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("at most 64 models, not 65")));
  std::vector<std::string> groups(kMaxWatchGroups + 1, "lab");
  EXPECT_THAT(fleet_->Subscribe({"dev-1", groups, {"mlp"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("at most 64 groups, not 65")));
  EXPECT_THAT(fleet_->Subscribe({"dev-1", {"lab\n"}, {"mlp"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("group 'lab\\x0a' may hold only")));
  EXPECT_THAT(fleet_->Subscribe({"dev-1", {}, {std::string(65, 'm')}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model must be 1-64 characters, not 65")));
  EXPECT_THAT(
      fleet_->Subscribe({"dev-1", {}, {"mlp"}, std::string(65, 'q')}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tier policy name must be at most 64 characters")));
  EXPECT_THAT(fleet_->Subscribe({"dev-1", {"lab"}, {"mlp", "other"}, "q27"}),
              IsOk());
}

}  // namespace
}  // namespace weightcast
