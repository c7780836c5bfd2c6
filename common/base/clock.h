// The wall clock, as an interface so that code stamping times (the tier cache's
// last use, a registration's date) can be given a clock a test sets.
// Implementations are thread-safe.
#ifndef WEIGHTCAST_COMMON_BASE_CLOCK_H_
#define WEIGHTCAST_COMMON_BASE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace weightcast {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The system's clock (absl::Now()); one instance for the process, never
// destroyed.
inline const Clock& SystemClock() {
  class System final : public Clock {
   public:
    absl::Time Now() const override { return absl::Now(); }
  };
  static const System* const clock = new System;
  return *clock;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_CLOCK_H_
