// ParallelFor: runs fn(i) for i in [0, count) on up to `threads` threads and
// joins them all. Used to encode and decode independent tiles of one layer at
// once. The first error wins; remaining indices still run (each is
// independent), and every thread is joined before return.
#ifndef WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_
#define WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_

#include <cstddef>
#include <functional>

#include "absl/status/status.h"

namespace weightcast {

// `threads` <= 0 means one thread per hardware core.
absl::Status ParallelFor(size_t count, int threads,
                         const std::function<absl::Status(size_t index)>& fn);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_PARALLEL_FOR_H_
