#include "server/rpc/call_deadlines.h"

#include <algorithm>

namespace weightcast {

CallDeadlines::CallDeadlines() : thread_([this] { Run(); }) {}

CallDeadlines::~CallDeadlines() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    changed_.Signal();
  }
  thread_.join();
}

std::unique_ptr<CallDeadlines::Guard> CallDeadlines::Watch(
    grpc::ServerContext* context, absl::Duration limit) {
  return Watch([context] { context->TryCancel(); }, limit);
}

std::unique_ptr<CallDeadlines::Guard> CallDeadlines::Watch(
    std::function<void()> cancel, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  const absl::Time cancel_at = deadline + std::min(limit, absl::Seconds(5));
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  calls_.emplace(std::make_pair(cancel_at, id), std::move(cancel));
  changed_.Signal();
  return std::unique_ptr<Guard>(new Guard(this, deadline, cancel_at, id));
}

CallDeadlines::Guard::~Guard() {
  // Under the mutex: the thread never cancels a context whose handler has
  // returned.
  absl::MutexLock lock(&owner_->mu_);
  owner_->calls_.erase(std::make_pair(cancel_at_, id_));
}

void CallDeadlines::Run() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    if (calls_.empty()) {
      changed_.Wait(&mu_);
      continue;
    }
    const auto first = calls_.begin();
    if (absl::Now() < first->first.first) {
      changed_.WaitWithDeadline(&mu_, first->first.first);
      continue;
    }
    first->second();
    cancelled_.fetch_add(1);
    calls_.erase(first);
  }
}

}  // namespace weightcast
