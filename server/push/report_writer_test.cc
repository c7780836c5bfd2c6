// ReportWriter on a real FleetRegistry in a fresh directory.
#include "server/push/report_writer.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/postgres_process.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

class ReportWriterTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Where a new, empty fleet registry lives for this test's engine.
  std::string Location(const std::string& dir) {
    absl::StatusOr<std::string> url =
        FreshRegistryLocation(GetParam(), dir + "/fleet.db", "report_writer");
    EXPECT_THAT(url, IsOk());
    return url.value_or("postgresql://unavailable");
  }

  void SetUp() override {
    const std::string dir = FreshDir(
        std::string("report_writer_") +
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    registry_ = FleetRegistry::Open(Location(dir)).value();
  }
  static DeviceRecord Installed(const std::string& device,
                                const std::string& version) {
    return {device, "mlp", version, "", "INSTALLED"};
  }
  std::unique_ptr<FleetRegistry> registry_;
};

// Every test runs against both engines: SQLite in the test's directory, and a
// fresh database on a real PostgreSQL server this binary starts.
INSTANTIATE_TEST_SUITE_P(Engines, ReportWriterTest,
                         ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST_P(ReportWriterTest, QueuedReportsAreStoredInFewTransactionsInOrder) {
  int checks = 0;
  ReportWriter writer(registry_.get(), [&](const DeviceRecord&) {
    ++checks;  // on the writer's thread only
    return absl::OkStatus();
  });
  constexpr int kReports = 2000;
  std::atomic<int> stored{0};
  for (int i = 0; i < kReports; ++i) {
    writer.Add(
        Installed("dev-" + std::to_string(i % 1000), i < 1000 ? "v1" : "v2"),
        [&](absl::Status s) { stored += s.ok(); });
  }
  writer.Flush();
  EXPECT_EQ(stored.load(), kReports);
  EXPECT_LT(writer.batches(), uint64_t{kReports});
  EXPECT_LE(checks, 2 * static_cast<int>(writer.batches()));
  auto counts = registry_->Counts("mlp");
  ASSERT_THAT(counts, IsOk());
  ASSERT_EQ(counts->size(), 1u);  // the later report of each device won
  EXPECT_EQ((*counts)[0].version, "v2");
  EXPECT_EQ((*counts)[0].devices, 1000u);
}

TEST_P(ReportWriterTest, AReportFailingItsCheckIsAnsweredAndNotStored) {
  ReportWriter writer(registry_.get(), [](const DeviceRecord& r) {
    return r.version == "v9" ? absl::NotFoundError("v9 is not registered")
                             : absl::OkStatus();
  });
  absl::Status good, bad;
  absl::Notification both;
  std::atomic<int> left{2};
  writer.Add(Installed("dev-1", "v1"), [&](absl::Status s) {
    good = s;
    if (--left == 0) both.Notify();
  });
  writer.Add(Installed("dev-2", "v9"), [&](absl::Status s) {
    bad = s;
    if (--left == 0) both.Notify();
  });
  both.WaitForNotification();
  EXPECT_THAT(good, IsOk());
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kNotFound, HasSubstr("v9")));
  auto stored = registry_->GetDevice("dev-1", "mlp");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(stored->has_value());
  auto refused = registry_->GetDevice("dev-2", "mlp");
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->has_value());
}

TEST_P(ReportWriterTest, AFullQueueRefusesAtOnceWithUnavailable) {
  absl::Notification release;
  // The check holds the writer's thread, so the queue fills behind it.
  ReportWriter writer(
      registry_.get(),
      [&](const DeviceRecord&) {
        release.WaitForNotification();
        return absl::OkStatus();
      },
      /*max_queued_bytes=*/4096);
  std::atomic<int> refused{0}, stored{0};
  for (int i = 0; i < 100; ++i) {
    writer.Add(Installed("dev-" + std::to_string(i), "v1"),
               [&](absl::Status s) {
                 if (s.code() == absl::StatusCode::kUnavailable) ++refused;
                 if (s.ok()) ++stored;
               });
  }
  EXPECT_GT(refused.load(), 0);
  release.Notify();
  writer.Flush();
  EXPECT_EQ(refused.load() + stored.load(), 100);
}

}  // namespace
}  // namespace weightcast
