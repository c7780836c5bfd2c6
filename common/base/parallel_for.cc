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

}  // namespace weightcast
