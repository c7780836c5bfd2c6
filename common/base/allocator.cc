#include "common/base/allocator.h"

#include <malloc.h>

namespace weightcast {

void MapLargeAllocations() { mallopt(M_MMAP_THRESHOLD, 1 << 20); }

}  // namespace weightcast
