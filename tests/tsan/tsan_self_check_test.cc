// ThreadSanitizer builds only: the absl::Mutex annotations in
// absl_sync_annotations.cc must make guarded accesses quiet and leave real
// races loud, or the TSan run proves nothing.
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

TEST(TsanSelfCheck, AccessesGuardedByAnAbslMutexOrConditionAreNotRaces) {
  absl::Mutex mu;
  int counter = 0;  // guarded by mu
  bool ready = false;
  std::thread waiter([&] {
    mu.LockWhen(absl::Condition(&ready));
    counter += 1;
    mu.Unlock();
  });
  std::thread writer([&] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock lock(&mu);
      counter += 1;
    }
    absl::MutexLock lock(&mu);
    ready = true;
  });
  writer.join();
  waiter.join();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(counter, 1001);
}

TEST(TsanSelfCheck, AnUnguardedRaceIsReported) {
  // TSAN_OPTIONS halt_on_error=1 (the tsan test preset): the report ends the
  // process with 66.
  EXPECT_EXIT(
      {
        int counter = 0;
        std::thread a([&] { counter += 1; });
        std::thread b([&] { counter += 1; });
        a.join();
        b.join();
        std::exit(counter == 2 ? 0 : 1);
      },
      testing::ExitedWithCode(66), "ThreadSanitizer: data race");
}

}  // namespace
}  // namespace weightcast
