#include "server/core/encoder_pool.h"

#include <algorithm>

namespace weightcast {

EncoderPool::EncoderPool(int workers) {
  if (workers <= 0)
    workers =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads_.reserve(workers);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
}

EncoderPool::~EncoderPool() { Stop(); }

void EncoderPool::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_.clear();
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

bool EncoderPool::Submit(Urgency urgency, std::function<void()> job,
                         bool first) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  if (first) {
    queue_.push_front({std::move(urgency), std::move(job)});
  } else {
    queue_.push_back({std::move(urgency), std::move(job)});
  }
  return true;
}

int EncoderPool::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

int EncoderPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void EncoderPool::Work() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](EncoderPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->queue_.empty();
          },
          this));
      if (stopping_) return;
      auto next = queue_.begin();  // the oldest urgent job, else the oldest job
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->urgency && it->urgency->load()) {
          next = it;
          break;
        }
      }
      job = std::move(next->run);
      queue_.erase(next);
      ++busy_;
    }
    job();  // never under the lock
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

}  // namespace weightcast
