#include "common/tensor/strided_extent.h"

#include "absl/strings/str_cat.h"
#include "common/tensor/tensor.h"

namespace weightcast {

absl::Status CheckStridedExtent(const std::string& name,
                                const std::vector<int64_t>& sizes,
                                const std::vector<int64_t>& strides,
                                int64_t offset, uint64_t element_size,
                                uint64_t stored_bytes) {
  for (int64_t size : sizes) {
    if (size == 0) return absl::OkStatus();
  }
  const std::string what =
      absl::StrCat("tensor '", name, "' ", ShapeToString(sizes));
  bool overflow = offset < 0 || strides.size() != sizes.size();
  uint64_t last =
      static_cast<uint64_t>(offset);  // the last element's index in the storage
  for (size_t d = 0; d < sizes.size() && !overflow; ++d) {
    uint64_t step = 0;
    overflow =
        sizes[d] < 0 || strides[d] < 0 ||
        __builtin_mul_overflow(static_cast<uint64_t>(sizes[d] - 1),
                               static_cast<uint64_t>(strides[d]), &step) ||
        __builtin_add_overflow(last, step, &last);
  }
  uint64_t needed = 0;
  overflow = overflow || __builtin_add_overflow(last, uint64_t{1}, &last) ||
             __builtin_mul_overflow(last, element_size, &needed);
  if (overflow || needed > stored_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " reaches past its stored data (",
                     overflow ? "more than 2^64" : absl::StrCat(needed),
                     " bytes needed, ", stored_bytes, " stored)"));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
