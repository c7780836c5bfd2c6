#include "server/core/encoder_pool.h"

#include <algorithm>

namespace weightcast {

EncoderPool::EncoderPool(int workers) {
  if (workers <= 0) workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads_.reserve(workers);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { Work(); });
}

EncoderPool::~EncoderPool() { Stop(); }

void EncoderPool::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    waiting_.clear();
    background_.clear();
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

bool EncoderPool::Submit(Priority priority, std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  (priority == Priority::kWaiting ? waiting_ : background_).push_back(std::move(job));
  return true;
}

int EncoderPool::busy() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

int EncoderPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size() + background_.size());
}

void EncoderPool::Work() {
  while (true) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](EncoderPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->waiting_.empty() || !pool->background_.empty();
          },
          this));
      if (stopping_) return;
      std::deque<std::function<void()>>& queue = waiting_.empty() ? background_ : waiting_;
      job = std::move(queue.front());
      queue.pop_front();
      ++busy_;
    }
    job();  // never under the lock
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

}  // namespace weightcast
