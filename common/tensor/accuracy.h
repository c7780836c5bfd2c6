// A model's measured accuracy on a labelled evaluation set: what the evaluator
// (common/eval) measures and the registry stores, kept apart so that storage
// does not include libtorch's evaluator. A plain value.
#ifndef WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_
#define WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_

#include <cstdint>

namespace weightcast {

struct Accuracy {
  double top1 = 0;  // percent of examples whose highest logit is the label
  double top2 = 0;  // percent whose label is among the two highest
  int64_t examples = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_
