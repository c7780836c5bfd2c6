// ParallelFor: runs fn(i) for i in [0, count) on up to `threads` threads and
// joins them all. Used to encode and decode independent tiles of one layer at
// once. The first error wins; remaining indices still run (each is
// independent), and every thread is joined before return.
#ifndef WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_
#define WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_

#include <cstddef>
#include <functional>
#include <memory>

#include "absl/status/status.h"

namespace weightcast {

// `threads` <= 0 means one thread per hardware core.
absl::Status ParallelFor(size_t count, int threads,
                         const std::function<absl::Status(size_t index)>& fn);

// Hands a task to threads the caller does not own (a server's worker pool),
// which run it at most once, whenever one is free, perhaps never.
using TaskSpawner = std::function<void(std::function<void()> task)>;

// As ParallelFor, but on borrowed threads: the calling thread works through the
// indices itself and offers up to `helpers` tasks to `spawn`, each of which
// takes indices nobody has taken yet. It waits only for indices already taken,
// never for a task to start, so a task queued behind the caller cannot
// deadlock it: one that runs after the last index was taken returns at once
// (without touching `fn`), one that never runs costs nothing.
absl::Status SharedParallelFor(
    size_t count, int helpers, const TaskSpawner& spawn,
    const std::function<absl::Status(size_t index)>& fn);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_
