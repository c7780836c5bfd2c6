// Accuracy of a model on a labelled evaluation set, run by libtorch: a
// TorchScript module of the architecture (torch.jit.save) whose parameters and
// buffers are replaced by a model's tensors, and a tensor file (.pt or
// .safetensors) holding "inputs" (any float dtype, first dimension = examples)
// and integer "labels" (class indices). The server measures every tier with it.
// An Evaluator is not thread-safe; load one per thread.
#ifndef WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_
#define WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tensor/accuracy.h"
#include "common/tensor/tensor.h"

namespace weightcast {

class Evaluator {
 public:
  // INVALID_ARGUMENT naming the file (and tensor) for a module that is not
  // TorchScript, a data file without "inputs" and "labels", or labels that are
  // not integers of the inputs' count.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Load(
      const std::string& module_path, const std::string& data_path);
  ~Evaluator();

  // INVALID_ARGUMENT naming the tensor unless `model` holds exactly the
  // module's parameters and buffers (by state_dict name) with their shapes.
  absl::Status CheckFits(const Model& model) const;

  // Loads `model`'s tensors (any dtype; converted to the module's) and
  // classifies every input. INVALID_ARGUMENT when the module's output is not
  // [examples, classes >= 2].
  absl::StatusOr<Accuracy> Evaluate(const Model& model);

  int64_t examples() const;

 private:
  struct State;
  explicit Evaluator(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_
