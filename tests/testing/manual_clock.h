// A Clock (common/base/clock.h) that moves only when the test sets it.
// Thread-safe. Header-only.
#ifndef WEIGHTCAST_TESTS_TESTING_MANUAL_CLOCK_H_
#define WEIGHTCAST_TESTS_TESTING_MANUAL_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/base/clock.h"

namespace weightcast {

class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time now = absl::FromUnixSeconds(1'000'000'000))
      : now_(now) {}
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Set(absl::Time now) {
    absl::MutexLock lock(&mu_);
    now_ = now;
  }
  void Advance(absl::Duration by) {
    absl::MutexLock lock(&mu_);
    now_ += by;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_MANUAL_CLOCK_H_
