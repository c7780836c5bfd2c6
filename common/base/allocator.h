// Process-wide allocator settings for the two programs (weightcast and
// weightcastd); a library embedding the SDK leaves them to its process.
#ifndef WEIGHTCAST_COMMON_BASE_ALLOCATOR_H_
#define WEIGHTCAST_COMMON_BASE_ALLOCATOR_H_

namespace weightcast {

// Blocks of 1 MiB or more are mapped and unmapped on their own instead of
// being carved from glibc's per-thread arenas. By default glibc raises that
// threshold to the largest block freed (up to 32 MiB), after which
// several-megabyte buffers (a pull's packed layers and bands, an encode's
// rows and pictures) come from the arenas of whichever threads freed them and
// fragment there. Measured as totals only, on the 1 B-parameter pull of
// bench/run_large_model_benchmark (docs/BENCHMARKS.md, "Large models"); which
// allocations fragment most was not measured.
// The same as MALLOC_MMAP_THRESHOLD_=1048576 in the
// environment, which a process embedding the SDK can set.
void MapLargeAllocations();

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_ALLOCATOR_H_
