#include "server/core/tier_leases.h"

#include <unistd.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace weightcast {
namespace {

std::string HolderName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::random_device random;
  return absl::StrCat(host, ":", getpid(), ":",
                      absl::Hex(random(), absl::kZeroPad8));
}

}  // namespace

TierLeases::TierLeases(Registry* registry, absl::Duration timeout)
    : registry_(registry), timeout_(timeout), holder_(HolderName()) {
  renewer_ = std::thread([this] { Renew(); });
}

TierLeases::~TierLeases() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  renewer_.join();
}

absl::StatusOr<bool> TierLeases::TryAcquire(int64_t version_id,
                                            const std::string& tier) {
  const absl::Time now = absl::Now();
  absl::StatusOr<bool> acquired = registry_->AcquireTierLease(
      version_id, tier, holder_, absl::ToUnixMillis(now),
      absl::ToUnixMillis(now + timeout_));
  if (acquired.ok() && *acquired) {
    absl::MutexLock lock(&mu_);
    ++held_;
  }
  return acquired;
}

void TierLeases::Release(int64_t version_id, const std::string& tier) {
  registry_->ReleaseTierLease(version_id, tier, holder_).IgnoreError();
  absl::MutexLock lock(&mu_);
  if (held_ > 0) --held_;
}

void TierLeases::Renew() {
  const auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_;
  };
  while (true) {
    bool renew = false;
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), timeout_ / 3))
        return;
      renew = held_ > 0;
    }
    // A failed renewal (registry unreachable) is retried next round; the
    // lease may expire meanwhile, and another replica may then encode too:
    // the same blobs, the same rows.
    if (renew) {
      registry_
          ->RenewTierLeases(holder_, absl::ToUnixMillis(absl::Now() + timeout_))
          .IgnoreError();
    }
  }
}

}  // namespace weightcast
