#include "common/base/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace weightcast {

absl::Status ParallelFor(size_t count, int threads,
                         const std::function<absl::Status(size_t index)>& fn) {
  if (threads <= 0)
    threads =
        static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t workers = std::min<size_t>(count, static_cast<size_t>(threads));
  if (workers <= 1) {
    absl::Status first;
    for (size_t i = 0; i < count; ++i) first.Update(fn(i));
    return first;
  }
  std::atomic<size_t> next{0};  // work-stealing cursor shared by the workers
  absl::Mutex mu;
  absl::Status first;  // guarded by mu
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      absl::Status status = fn(i);
      if (!status.ok()) {
        absl::MutexLock lock(&mu);
        first.Update(status);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
  return first;
}

namespace {

// What SharedParallelFor's caller and its helpers share; the helpers hold it
// past the caller's return.
struct SharedLoop {
  SharedLoop(size_t count, const std::function<absl::Status(size_t)>* fn)
      : count(count), fn(fn) {}
  const size_t count;
  // Only called for an index below `count`: the caller waits for those.
  const std::function<absl::Status(size_t)>* const fn;
  std::atomic<size_t> next{0};  // the next index to take
  absl::Mutex mu;
  size_t finished ABSL_GUARDED_BY(mu) = 0;
  absl::Status first ABSL_GUARDED_BY(mu);
};

void TakeIndices(const std::shared_ptr<SharedLoop>& loop) {
  for (size_t i = loop->next.fetch_add(1); i < loop->count;
       i = loop->next.fetch_add(1)) {
    absl::Status status = (*loop->fn)(i);
    absl::MutexLock lock(&loop->mu);
    loop->first.Update(status);
    ++loop->finished;
  }
}

}  // namespace

absl::Status SharedParallelFor(
    size_t count, int helpers, const TaskSpawner& spawn,
    const std::function<absl::Status(size_t index)>& fn) {
  auto loop = std::make_shared<SharedLoop>(count, &fn);
  const size_t offered = std::min<size_t>(
      count > 0 ? count - 1 : 0, static_cast<size_t>(std::max(helpers, 0)));
  for (size_t t = 0; t < offered; ++t) spawn([loop] { TakeIndices(loop); });
  TakeIndices(loop);
  absl::MutexLock lock(&loop->mu);
  loop->mu.Await(absl::Condition(
      +[](SharedLoop* l) ABSL_EXCLUSIVE_LOCKS_REQUIRED(l->mu) {
        return l->finished == l->count;
      },
      loop.get()));
  return loop->first;
}

}  // namespace weightcast
