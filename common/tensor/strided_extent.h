// Whether a strided tensor view fits the bytes stored for it: the check both
// libtorch wrappers (common/checkpoint/libtorch_io.cc,
// common/eval/evaluator.cc) make on every tensor of an untrusted TorchScript
// module, since torch::jit::load accepts views that reach past their storage.
// Plain numbers, no libtorch types. Pure; thread-safe.
#ifndef WEIGHTCAST_COMMON_TENSOR_STRIDED_EXTENT_H_
#define WEIGHTCAST_COMMON_TENSOR_STRIDED_EXTENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace weightcast {

// OK when a view of `sizes` and `strides` (elements) starting at `offset`
// elements, of `element_size`-byte elements, lies within `stored_bytes`; an
// empty view always fits. INVALID_ARGUMENT naming the tensor (`name`)
// otherwise, negative strides and offsets and arithmetic past 2^64 included.
absl::Status CheckStridedExtent(const std::string& name,
                                const std::vector<int64_t>& sizes,
                                const std::vector<int64_t>& strides,
                                int64_t offset, uint64_t element_size,
                                uint64_t stored_bytes);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_STRIDED_EXTENT_H_
