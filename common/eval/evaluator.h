// Accuracy of a model on an evaluation set, run by libtorch: a TorchScript
// module of the architecture (torch.jit.save) whose parameters and buffers are
// replaced by a model's tensors, and a tensor file (.pt or .safetensors)
// holding "inputs" (any float dtype, first dimension = examples) and, for a
// classifier, integer "labels" (class indices). Without labels (an embedding
// model, say) the measure is the output cosine: the mean over the examples of
// the cosine between the model's output and the float model's
// (SetReference). The server measures every tier with it.
// An Evaluator is not thread-safe; load one per thread.
#ifndef WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_
#define WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/accuracy.h"
#include "common/tensor/tensor.h"

namespace at {
class Tensor;
}  // namespace at

namespace weightcast {

// The float model's outputs on a bundle's inputs: `rows` (one per input) of
// `columns` values, row-major.
struct ReferenceOutputs {
  int64_t rows = 0;
  int64_t columns = 0;
  std::vector<float> values;
};

class Evaluator {
 public:
  // INVALID_ARGUMENT naming the file (and tensor) for a module that is not
  // TorchScript, a data file without "inputs", or labels that are not
  // integers of the inputs' count.
  static absl::StatusOr<std::unique_ptr<Evaluator>> Load(
      const std::string& module_path, const std::string& data_path);
  ~Evaluator();

  // Whether the data file has labels (top-1 and top-2 are measured).
  bool labelled() const;

  // Runs the float model on every input and keeps its outputs, which later
  // evaluations compare theirs with (Accuracy::output_cosine); returns the
  // float model's own figures from the same pass (Evaluate's, its cosine 1).
  // Errors as Evaluate's; INVALID_ARGUMENT when the outputs would take more
  // than kMaxReferenceValues floats.
  absl::StatusOr<Accuracy> SetReference(const Model& float_model);
  static constexpr int64_t kMaxReferenceValues = int64_t{64} << 20;
  // The outputs SetReference kept, to hand to another Evaluator of the same
  // bundle without running the float model again; none (0 rows) before
  // SetReference or when they are more than `max_values` values.
  ReferenceOutputs reference(int64_t max_values = kMaxReferenceValues) const;
  // Takes outputs an Evaluator of the same bundle kept. INVALID_ARGUMENT
  // unless there is one row per input and rows x columns values (at most
  // kMaxReferenceValues).
  absl::Status SetReference(const ReferenceOutputs& outputs);

  // INVALID_ARGUMENT naming the tensor unless `model` holds exactly the
  // module's parameters and buffers (by state_dict name) with their shapes.
  absl::Status CheckFits(const Model& model) const;

  // Loads `model`'s tensors (any dtype; converted to the module's) and runs
  // every input: top-1 and top-2 when labelled, the output cosine when a
  // reference is set. INVALID_ARGUMENT when the module's output is not a
  // tensor with one row per input ([examples, classes >= 2] when labelled),
  // or not of the reference's shape.
  absl::StatusOr<Accuracy> Evaluate(const Model& model);

  // Per linear layer and one-group 2-D convolution that the module's forward
  // calls (outside any branch or loop) with one of the module's own
  // parameters as its weight: the root mean square over every input of each
  // feature entering it (a linear layer's input features; a convolution's
  // input channels, over images and positions), with `model`'s tensors loaded.
  // Keyed by the weight's state_dict name. A weight error in column j costs at
  // the layer's output its square times figure j's square, so these say which
  // columns of a weight matter (issue 21: activation-aware coding). A layer
  // called more than once counts every call's inputs. Errors as Evaluate's.
  absl::StatusOr<std::map<std::string, std::vector<float>>> InputRms(
      const Model& model);
  // Of the layers InputRms measures, those whose output forward returns as it
  // is (a classifier's last layer), by weight name. INVALID_ARGUMENT when
  // libtorch cannot analyse the module's forward.
  absl::StatusOr<std::set<std::string>> OutputLayers();
  // InputRms of the layers whose columns are worth weighing by it: all but
  // OutputLayers (weighing a classifier's columns cost fc_cnn 0.5 point of
  // top-1 at every QP and saved nothing: docs/BENCHMARKS.md, column
  // weighting). What weightcast-pack --eval-bundle and the server's accuracy
  // tiers code column scales from (layer_codec.h's WeighColumns).
  absl::StatusOr<std::map<std::string, std::vector<float>>> InputRmsToWeigh(
      const Model& model);

  int64_t examples() const;

  // Asked before each batch of inputs (kBatch) by every pass above: when it
  // returns true the pass stops with CANCELLED, so that a server shutting down
  // waits for one batch, not a whole evaluation (a res_cnn pass over 10,000
  // images took ~45 s on a loaded machine). None by default.
  void SetCancel(std::function<bool()> cancelled);

 private:
  struct State;
  explicit Evaluator(std::unique_ptr<State> state);
  // Copies `model`'s tensors into the module's parameters and buffers (the
  // caller checked CheckFits and catches libtorch's exceptions).
  static absl::Status LoadModel(State& state, const Model& model);
  // Builds InputRms's instrumented copy of forward once.
  absl::Status EnsureInputProbe();
  // Loads `model` into the module and runs every batch of inputs, handing
  // each output (float32, one row per input) to `each`; libtorch's errors
  // become INVALID_ARGUMENT.
  static absl::Status RunBatches(
      State& state, const Model& model,
      const std::function<absl::Status(int64_t begin, int64_t end,
                                       const at::Tensor& output)>& each);
  // Evaluate's pass, each output also handed to `keep` when given.
  absl::StatusOr<Accuracy> Score(
      const Model& model,
      const std::function<absl::Status(int64_t begin, int64_t end,
                                       const at::Tensor& output)>& keep);
  std::unique_ptr<State> state_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_EVAL_EVALUATOR_H_
