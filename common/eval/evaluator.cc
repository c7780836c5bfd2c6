// The only file of weightcast_eval that includes libtorch headers (each costs
// ~18 s to compile).
#include "common/eval/evaluator.h"

#include <ATen/Parallel.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/libtorch_io.h"
#include "common/tensor/strided_extent.h"

namespace weightcast {
namespace {

constexpr int64_t kBatch = 500;

// torch::jit::load accepts a tensor whose storage record is shorter than its
// sizes, strides and offset reach; copying weights into it would write past the
// allocation.
absl::Status CheckWithinStorage(const std::string& name,
                                const torch::Tensor& t) {
  if (t.layout() != torch::kStrided || !t.has_storage()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' ", ShapeToString(t.sizes().vec()),
                     " is not dense"));
  }
  return CheckStridedExtent(name, t.sizes().vec(), t.strides().vec(),
                            t.storage_offset(), t.element_size(),
                            t.storage().nbytes());
}

absl::StatusOr<torch::Tensor> ToTorch(const Tensor& tensor) {
  ASSIGN_OR_RETURN(std::vector<float> values, ToFloat32(tensor));
  return torch::from_blob(values.data(), tensor.shape, torch::kFloat).clone();
}

// The cosine of each row of `a` with the same row of `b` (float64): 1 for two
// zero rows, 0 for a zero row against another.
torch::Tensor Cosines(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  const torch::Tensor dot = (x * y).sum(1);
  const torch::Tensor nx = x.norm(2, 1), ny = y.norm(2, 1);
  const torch::Tensor norms = nx * ny;
  return torch::where(
      nx.eq(0).logical_and(ny.eq(0)), torch::ones_like(dot),
      torch::where(norms.gt(0), dot / norms, torch::zeros_like(dot)));
}

const Tensor* Find(const Model& model, const std::string& name) {
  for (const Tensor& t : model.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// The state_dict name of a value forward reads from the module's own
// attributes (self.fc1.weight: "fc1.weight"); empty for any other value.
std::string AttributePath(torch::jit::Value* value,
                          const torch::jit::Value* self) {
  std::string path;
  while (value->node()->kind() == c10::prim::GetAttr) {
    const std::string& field = value->node()->s(c10::attr::name);
    path = path.empty() ? field : absl::StrCat(field, ".", path);
    value = value->node()->input(0);
  }
  return value == self ? path : "";
}

// A copy of a module's forward that returns, instead of its output, a tuple
// of the inputs of the layers it measures (Evaluator::InputRms).
struct InputProbe {
  std::unique_ptr<torch::jit::GraphFunction> function;  // none: no layer
  std::vector<std::string> weights;     // per element of the tuple
  std::vector<bool> convolution;        // aten::conv2d, else aten::linear
  std::set<std::string> output_layers;  // forward returns their output
};

InputProbe MakeInputProbe(const torch::jit::Module& module,
                          const std::map<std::string, torch::Tensor>& slots) {
  std::shared_ptr<torch::jit::Graph> graph =
      module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);  // submodules' calls become their operators
  InputProbe probe;
  std::vector<torch::jit::Value*> inputs;
  for (torch::jit::Node* node : graph->nodes()) {  // the top-level block
    const bool linear = node->kind() == c10::aten::linear;
    if (!linear && node->kind() != c10::aten::conv2d) continue;
    std::string weight = AttributePath(node->input(1), graph->inputs()[0]);
    if (slots.count(weight) == 0) continue;
    if (node->output() == graph->outputs()[0])
      probe.output_layers.insert(weight);
    probe.weights.push_back(std::move(weight));
    probe.convolution.push_back(!linear);
    inputs.push_back(node->input(0));
  }
  if (inputs.empty()) return probe;
  torch::jit::Node* tuple = graph->insertNode(graph->createTuple(inputs));
  graph->eraseOutput(0);
  graph->registerOutput(tuple->output());
  probe.function =
      std::make_unique<torch::jit::GraphFunction>("input_rms", graph, nullptr);
  return probe;
}

// One batch's inputs to a measured layer with weight `weight`: the sum of
// squares per feature (double) and how many values each sums; none when the
// input does not match the weight (a convolution of several groups).
struct FeatureSquares {
  torch::Tensor sums;
  int64_t count = 0;
};
std::optional<FeatureSquares> SquaresPerFeature(const torch::Tensor& input,
                                                const torch::Tensor& weight,
                                                bool convolution) {
  const torch::Tensor x = input.to(torch::kDouble);
  if (!convolution) {
    if (x.dim() < 1 || weight.dim() != 2 || x.size(-1) != weight.size(1))
      return std::nullopt;
    const torch::Tensor rows = x.reshape({-1, x.size(-1)});
    return FeatureSquares{rows.square().sum(0), rows.size(0)};
  }
  if (x.dim() != 4 || weight.dim() != 4 || x.size(1) != weight.size(1))
    return std::nullopt;
  return FeatureSquares{x.square().sum({0, 2, 3}),
                        x.size(0) * x.size(2) * x.size(3)};
}

}  // namespace

struct Evaluator::State {
  std::string module_path;
  torch::jit::Module module;
  std::map<std::string, torch::Tensor>
      slots;  // the module's parameters and buffers by name
  torch::Tensor inputs;
  torch::Tensor labels;     // int64; undefined without labels
  torch::Tensor reference;  // the float model's outputs, [examples, values]
  std::unique_ptr<InputProbe> input_probe;  // built by the first InputRms
  std::function<bool()> cancelled;          // SetCancel's
};

namespace {

// CANCELLED when the evaluator's SetCancel hook says so; asked before a batch.
absl::Status CheckCancelled(const std::function<bool()>& cancelled) {
  if (cancelled && cancelled())
    return absl::CancelledError("the evaluation was cancelled");
  return absl::OkStatus();
}

}  // namespace

Evaluator::Evaluator(std::unique_ptr<State> state) : state_(std::move(state)) {}
Evaluator::~Evaluator() = default;

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Load(
    const std::string& module_path, const std::string& data_path) {
  auto state = std::make_unique<State>();
  state->module_path = module_path;
  at::set_num_threads(1);  // callers parallelize across evaluations
  // The module is untrusted bytes: everything libtorch does with it until it is
  // known sound may throw (c10::Error, and the TorchScript compiler's
  // ErrorReport or runtime_error on damaged code/).
  RETURN_IF_ERROR(CheckTorchScriptArchive(module_path));
  try {
    state->module = torch::jit::load(module_path);
    state->module.eval();
    for (const auto& p : state->module.named_parameters(/*recurse=*/true))
      state->slots[p.name] = p.value;
    for (const auto& b : state->module.named_buffers(/*recurse=*/true))
      state->slots[b.name] = b.value;
    for (const auto& [name, value] : state->slots) {
      if (absl::Status fits = CheckWithinStorage(name, value); !fits.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(module_path, ": ", fits.message()));
      }
    }
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        module_path, ": the TorchScript module does not fit in memory"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        module_path,
        ": not a loadable TorchScript module: ", BriefLibtorchError(e)));
  }

  ASSIGN_OR_RETURN(const Model data, ReadCheckpoint(data_path));
  const Tensor* inputs = Find(data, "inputs");
  const Tensor* labels = Find(data, "labels");
  if (inputs == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_path,
                     ": an evaluation set needs a tensor \"inputs\" (and "
                     "\"labels\" for a classifier)"));
  }
  if (inputs->shape.empty() || inputs->shape[0] == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_path, ": \"inputs\" ", ShapeToString(inputs->shape),
                     " must have one row per example"));
  }
  if (labels != nullptr &&
      (IsFloatingPoint(labels->dtype) || labels->shape.size() != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        data_path,
        ": \"labels\" must be a 1-D integer tensor of class indices"));
  }
  if (labels != nullptr && inputs->shape[0] != labels->shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_path, ": \"inputs\" ", ShapeToString(inputs->shape),
                     " must have one row per label (", labels->shape[0], ")"));
  }
  ASSIGN_OR_RETURN(state->inputs, ToTorch(*inputs));
  if (labels != nullptr) {
    ASSIGN_OR_RETURN(torch::Tensor labels_float, ToTorch(*labels));
    state->labels = labels_float.to(torch::kLong);
  }
  return std::unique_ptr<Evaluator>(new Evaluator(std::move(state)));
}

int64_t Evaluator::examples() const { return state_->inputs.size(0); }

void Evaluator::SetCancel(std::function<bool()> cancelled) {
  state_->cancelled = std::move(cancelled);
}

bool Evaluator::labelled() const { return state_->labels.defined(); }

absl::Status Evaluator::CheckFits(const Model& model) const {
  for (const Tensor& t : model.tensors) {
    auto slot = state_->slots.find(t.name);
    if (slot == state_->slots.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", t.name,
          " is not a parameter or buffer of the evaluation module ",
          state_->module_path));
    }
    if (slot->second.sizes().vec() != t.shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, " has shape ", ShapeToString(t.shape),
                       " but the evaluation module's is ",
                       ShapeToString(slot->second.sizes().vec())));
    }
  }
  for (const auto& [name, value] : state_->slots) {
    if (Find(model, name) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the evaluation module's ", name, " is not in the checkpoint"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Accuracy> Evaluator::Evaluate(const Model& model) {
  return Score(model, nullptr);
}

absl::StatusOr<Accuracy> Evaluator::Score(
    const Model& model,
    const std::function<absl::Status(int64_t begin, int64_t end,
                                     const at::Tensor& output)>& keep) {
  RETURN_IF_ERROR(CheckFits(model));
  const int64_t n = examples();
  const bool labelled = this->labelled();
  const torch::Tensor& reference = state_->reference;
  int64_t top1 = 0, top2 = 0;
  double cosine_sum = 0;
  RETURN_IF_ERROR(RunBatches(
      *state_, model,
      [&](int64_t begin, int64_t end,
          const torch::Tensor& output) -> absl::Status {
        if (labelled && (output.dim() != 2 || output.size(1) < 2)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "the evaluation module returned ",
              ShapeToString(output.sizes().vec()), " for ", end - begin,
              " inputs; expected [examples, classes]"));
        }
        if (labelled) {
          const torch::Tensor best = std::get<1>(output.topk(2, 1));
          const torch::Tensor truth =
              state_->labels.slice(0, begin, end).unsqueeze(1);
          const torch::Tensor hits = best.eq(truth);
          top1 += hits.select(1, 0).sum().item<int64_t>();
          top2 += hits.any(1).sum().item<int64_t>();
        }
        if (reference.defined()) {
          const torch::Tensor rows = output.reshape({end - begin, -1});
          const torch::Tensor expected = reference.slice(0, begin, end);
          if (rows.sizes() != expected.sizes()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "the evaluation module returned ",
                ShapeToString(rows.sizes().vec()),
                " values for a batch where the float model returned ",
                ShapeToString(expected.sizes().vec())));
          }
          cosine_sum += Cosines(rows, expected).sum().item<double>();
        }
        return keep ? keep(begin, end, output) : absl::OkStatus();
      }));
  Accuracy accuracy;
  accuracy.examples = n;
  accuracy.labelled = labelled;
  if (labelled) {
    accuracy.top1 = 100.0 * top1 / n;
    accuracy.top2 = 100.0 * top2 / n;
  }
  if (reference.defined()) accuracy.output_cosine = cosine_sum / n;
  return accuracy;
}

absl::StatusOr<Accuracy> Evaluator::SetReference(const Model& float_model) {
  state_->reference = torch::Tensor();
  std::vector<torch::Tensor> outputs;
  int64_t values = 0;
  ASSIGN_OR_RETURN(
      Accuracy accuracy,
      Score(float_model,
            [&](int64_t begin, int64_t end,
                const torch::Tensor& output) -> absl::Status {
              values += output.numel();
              if (values > kMaxReferenceValues) {
                return absl::InvalidArgumentError(absl::StrCat(
                    "the evaluation module's outputs for ", examples(),
                    " inputs are over ", kMaxReferenceValues,
                    " values: use fewer inputs"));
              }
              outputs.push_back(output.reshape({end - begin, -1}).clone());
              return absl::OkStatus();
            }));
  try {
    state_->reference = torch::cat(outputs, 0);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the evaluation module's outputs differ in shape "
                     "between batches: ",
                     BriefLibtorchError(e)));
  }
  accuracy.output_cosine = 1.0;  // its own outputs
  return accuracy;
}

ReferenceOutputs Evaluator::reference(int64_t max_values) const {
  ReferenceOutputs out;
  const torch::Tensor& kept = state_->reference;
  if (!kept.defined() || kept.numel() > max_values) return out;
  const torch::Tensor rows = kept.contiguous();
  out.rows = rows.size(0);
  out.columns = rows.size(1);
  out.values.assign(rows.data_ptr<float>(),
                    rows.data_ptr<float>() + rows.numel());
  return out;
}

absl::Status Evaluator::SetReference(const ReferenceOutputs& outputs) {
  if (outputs.rows != examples() || outputs.columns < 1 ||
      outputs.columns >
          kMaxReferenceValues / std::max<int64_t>(1, outputs.rows) ||
      static_cast<int64_t>(outputs.values.size()) !=
          outputs.rows * outputs.columns) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reference outputs of ", outputs.rows, " x ", outputs.columns, " (",
        outputs.values.size(), " values) do not fit ", examples(), " inputs"));
  }
  state_->reference =
      torch::from_blob(const_cast<float*>(outputs.values.data()),  // copied
                       {outputs.rows, outputs.columns}, torch::kFloat)
          .clone();
  return absl::OkStatus();
}

absl::Status Evaluator::RunBatches(
    State& state, const Model& model,
    const std::function<absl::Status(int64_t begin, int64_t end,
                                     const at::Tensor& output)>& each) {
  torch::NoGradGuard no_grad;
  const int64_t n = state.inputs.size(0);
  try {
    RETURN_IF_ERROR(LoadModel(state, model));
    for (int64_t begin = 0; begin < n; begin += kBatch) {
      RETURN_IF_ERROR(CheckCancelled(state.cancelled));
      const int64_t end = std::min(n, begin + kBatch);
      const torch::IValue output =
          state.module.forward({state.inputs.slice(0, begin, end)});
      if (!output.isTensor() || output.toTensor().dim() < 1 ||
          output.toTensor().size(0) != end - begin) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the evaluation module returned ",
            output.isTensor() ? ShapeToString(output.toTensor().sizes().vec())
                              : std::string("no tensor"),
            " for ", end - begin, " inputs; expected one row per input"));
      }
      RETURN_IF_ERROR(each(begin, end, output.toTensor().to(torch::kFloat)));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the evaluation module failed on the inputs: ", BriefLibtorchError(e)));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::LoadModel(State& state, const Model& model) {
  for (const Tensor& t : model.tensors) {
    ASSIGN_OR_RETURN(torch::Tensor value, ToTorch(t));
    state.slots[t.name].copy_(value);
  }
  return absl::OkStatus();
}

absl::Status Evaluator::EnsureInputProbe() {
  if (state_->input_probe != nullptr) return absl::OkStatus();
  try {
    state_->input_probe = std::make_unique<InputProbe>(
        MakeInputProbe(state_->module, state_->slots));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(state_->module_path,
                     ": cannot analyse its forward: ", BriefLibtorchError(e)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::set<std::string>> Evaluator::OutputLayers() {
  RETURN_IF_ERROR(EnsureInputProbe());
  return state_->input_probe->output_layers;
}

absl::StatusOr<std::map<std::string, std::vector<float>>>
Evaluator::InputRmsToWeigh(const Model& model) {
  ASSIGN_OR_RETURN(auto rms, InputRms(model));
  ASSIGN_OR_RETURN(const std::set<std::string> last, OutputLayers());
  for (const std::string& name : last) rms.erase(name);
  return rms;
}

absl::StatusOr<std::map<std::string, std::vector<float>>> Evaluator::InputRms(
    const Model& model) {
  RETURN_IF_ERROR(CheckFits(model));
  State& state = *state_;
  torch::NoGradGuard no_grad;
  std::map<std::string, FeatureSquares> totals;
  std::set<std::string> unmatched;
  RETURN_IF_ERROR(EnsureInputProbe());
  try {
    const InputProbe& probe = *state.input_probe;
    if (probe.function == nullptr) {
      return std::map<std::string, std::vector<float>>();  // no such layer
    }
    RETURN_IF_ERROR(LoadModel(state, model));
    const int64_t n = state.inputs.size(0);
    for (int64_t begin = 0; begin < n; begin += kBatch) {
      RETURN_IF_ERROR(CheckCancelled(state.cancelled));
      std::vector<c10::IValue> stack{
          state.module._ivalue(),
          state.inputs.slice(0, begin, std::min(n, begin + kBatch))};
      probe.function->run(stack);
      const auto& inputs = stack.at(0).toTuple()->elements();
      for (size_t i = 0; i < probe.weights.size(); ++i) {
        const std::string& name = probe.weights[i];
        const std::optional<FeatureSquares> squares =
            SquaresPerFeature(inputs.at(i).toTensor(), state.slots.at(name),
                              probe.convolution[i]);
        if (!squares.has_value()) {
          unmatched.insert(name);
          continue;
        }
        FeatureSquares& total = totals[name];
        total.sums =
            total.sums.defined() ? total.sums + squares->sums : squares->sums;
        total.count += squares->count;
      }
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the evaluation module failed on the inputs: ", BriefLibtorchError(e)));
  }
  std::map<std::string, std::vector<float>> rms;
  for (const auto& [name, total] : totals) {
    if (unmatched.count(name) != 0 || total.count == 0) continue;
    const torch::Tensor figures =
        (total.sums / static_cast<double>(total.count))
            .sqrt()
            .to(torch::kFloat);
    rms[name].assign(figures.data_ptr<float>(),
                     figures.data_ptr<float>() + figures.numel());
  }
  return rms;
}

}  // namespace weightcast
