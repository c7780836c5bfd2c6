// CallDeadlines on the real clock with short limits; cancelling is a callback,
// so no server.
#include "server/rpc/call_deadlines.h"

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

TEST(CallDeadlines, ACallIsExpiredAtItsLimitAndCancelledTheLimitAgainLater) {
  CallDeadlines deadlines;
  absl::Notification cancelled;
  const absl::Time start = absl::Now();
  absl::Time cancelled_at;
  auto guard = deadlines.Watch(
      [&] {
        cancelled_at = absl::Now();
        cancelled.Notify();
      },
      absl::Milliseconds(30));
  ASSERT_TRUE(cancelled.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(guard->expired());
  EXPECT_GE(cancelled_at - start,
            absl::Milliseconds(60));  // the deadline, then min(limit, 5 s)
  // Counted once the cancel has run: wait (bounded) for the count.
  for (int i = 0; i < 200 && deadlines.cancelled() == 0; ++i)
    absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(deadlines.cancelled(), 1u);
}

TEST(CallDeadlines, ACallThatEndsInTimeIsNeverCancelled) {
  CallDeadlines deadlines;
  std::atomic<bool> cancelled{false};
  {
    auto guard =
        deadlines.Watch([&] { cancelled = true; }, absl::Milliseconds(20));
    EXPECT_FALSE(deadlines.Watch([] {}, absl::Hours(1))->expired());
  }  // the handler returned before its deadline
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(cancelled);
  EXPECT_EQ(deadlines.cancelled(), 0u);
}

TEST(CallDeadlines, CallsAreCancelledInTheOrderOfTheirDeadlines) {
  CallDeadlines deadlines;
  absl::Mutex mu;
  std::vector<std::string> order;
  absl::Notification both;
  auto cancel = [&](std::string name) {
    return [&, name] {
      absl::MutexLock lock(&mu);
      order.push_back(name);
      if (order.size() == 2) both.Notify();
    };
  };
  auto slow = deadlines.Watch(cancel("slow"), absl::Milliseconds(60));
  auto fast = deadlines.Watch(cancel("fast"), absl::Milliseconds(10));
  auto never = deadlines.Watch(cancel("never"), absl::Hours(1));
  ASSERT_TRUE(both.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(order, testing::ElementsAre("fast", "slow"));
  EXPECT_FALSE(never->expired());
}

}  // namespace
}  // namespace weightcast
