// ThreadSanitizer builds only (WEIGHTCAST_TSAN). Debian's libabsl is not built
// with -fsanitize=thread, so TSan cannot see the happens-before edges
// absl::Mutex and absl::CondVar create and would report every access they guard
// as a race. This file interposes the executable's calls to the lock
// operations: each calls the library's own code (found with dlsym(RTLD_NEXT))
// and tells TSan that the mutex was released or acquired around it.
//
// Annotating a release just before the real unlock and an acquire just after
// the real lock is conservative: everything the annotations order is ordered by
// the real mutex too.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

// The library's definition of the member function that the caller's definition
// interposes, looked up once by mangled name.
template <typename Fn>
Fn Next(Fn, const char* mangled) {
  void* symbol = dlsym(RTLD_NEXT, mangled);
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan annotations: %s not found in libabsl\n",
                 mangled);
    std::abort();
  }
  Fn fn;
  static_assert(sizeof(fn) >= sizeof(symbol));
  __builtin_memcpy(&fn, &symbol, sizeof(symbol));
  return fn;
}

void Acquired(const void* mu) { __tsan_acquire(const_cast<void*>(mu)); }
void Releasing(const void* mu) { __tsan_release(const_cast<void*>(mu)); }

// absl evaluates a waiter's condition with the mutex held, in the waiting
// thread or in whichever thread unlocks: the evaluation is annotated as a
// critical section of its own.
struct AnnotatedCondition {
  const absl::Condition* condition;
  const absl::Mutex* mu;

  static bool Eval(AnnotatedCondition* self) {
    Acquired(self->mu);
    const bool met = self->condition->Eval();
    Releasing(self->mu);
    return met;
  }
};

// absl's deadlock detector keeps a graph of lock order behind its own
// (uninstrumented) spin lock; TSan sees the memmove calls on it from several
// threads and reports them. TSan checks lock order itself.
const bool deadlock_detection_off = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// The library's member functions are called as plain functions taking `this`
// first, as the Itanium C++ ABI passes it.
void Mutex::Lock() {
  static auto next = Next(static_cast<void (*)(Mutex*)>(nullptr),
                          "_ZN4absl7debian35Mutex4LockEv");
  next(this);
  Acquired(this);
}

void Mutex::ReaderLock() {
  static auto next = Next(static_cast<void (*)(Mutex*)>(nullptr),
                          "_ZN4absl7debian35Mutex10ReaderLockEv");
  next(this);
  Acquired(this);
}

bool Mutex::TryLock() {
  static auto next = Next(static_cast<bool (*)(Mutex*)>(nullptr),
                          "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = next(this);
  if (locked) Acquired(this);
  return locked;
}

void Mutex::Unlock() {
  static auto next = Next(static_cast<void (*)(Mutex*)>(nullptr),
                          "_ZN4absl7debian35Mutex6UnlockEv");
  Releasing(this);
  next(this);
}

void Mutex::ReaderUnlock() {
  static auto next = Next(static_cast<void (*)(Mutex*)>(nullptr),
                          "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Releasing(this);
  next(this);
}

void Mutex::LockWhen(const Condition& cond) {
  static auto next =
      Next(static_cast<void (*)(Mutex*, const Condition&)>(nullptr),
           "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  next(this, Condition(&AnnotatedCondition::Eval, &annotated));
  Acquired(this);
}

void Mutex::Await(const Condition& cond) {
  static auto next =
      Next(static_cast<void (*)(Mutex*, const Condition&)>(nullptr),
           "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  Releasing(this);
  next(this, Condition(&AnnotatedCondition::Eval, &annotated));
  Acquired(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto next = Next(
      static_cast<bool (*)(Mutex*, const Condition&, absl::Duration)>(nullptr),
      "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_"
      "8DurationE");
  AnnotatedCondition annotated{&cond, this};
  Releasing(this);
  const bool met =
      next(this, Condition(&AnnotatedCondition::Eval, &annotated), timeout);
  Acquired(this);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto next = Next(
      static_cast<bool (*)(Mutex*, const Condition&, absl::Time)>(nullptr),
      "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{&cond, this};
  Releasing(this);
  const bool met =
      next(this, Condition(&AnnotatedCondition::Eval, &annotated), deadline);
  Acquired(this);
  return met;
}

void CondVar::Wait(Mutex* mu) {
  static auto next = Next(static_cast<void (*)(CondVar*, Mutex*)>(nullptr),
                          "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Releasing(mu);
  next(this, mu);
  Acquired(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto next = Next(
      static_cast<bool (*)(CondVar*, Mutex*, absl::Duration)>(nullptr),
      "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Releasing(mu);
  const bool timed_out = next(this, mu, timeout);
  Acquired(mu);
  return timed_out;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto next =
      Next(static_cast<bool (*)(CondVar*, Mutex*, absl::Time)>(nullptr),
           "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Releasing(mu);
  const bool timed_out = next(this, mu, deadline);
  Acquired(mu);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
