// A model's measured accuracy on an evaluation set (labelled or not): what the
// evaluator (common/eval) measures and the registry stores, kept apart so that
// storage does not include libtorch's evaluator. A plain value.
#ifndef WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_
#define WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_

#include <cstdint>
#include <optional>

namespace weightcast {

struct Accuracy {
  double top1 = 0;  // percent of examples whose highest logit is the label
  double top2 = 0;  // percent whose label is among the two highest
  int64_t examples = 0;
  // false: a bundle of inputs only (an embedding model, say): top1 and top2
  // are 0 and mean nothing; output_cosine is the measure.
  bool labelled = true;
  // The mean over the examples of the cosine between this model's output and
  // the float model's (1 for the float model itself); none from figures
  // stored before it was measured.
  std::optional<double> output_cosine;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_ACCURACY_H_
