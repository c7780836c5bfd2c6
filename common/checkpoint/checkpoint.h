// Reading any supported checkpoint and writing the files users load. The format
// is recognized by content, not by name: torch.save zip archives, TorchScript
// archives (torch.jit.save) and safetensors. Writers pick the format from the
// output's extension (.pt or .safetensors). Stateless; thread-safe.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor/quantize.h"
#include "common/tensor/tensor.h"

namespace weightcast {

enum class CheckpointFormat { kTorchSave, kTorchScript, kSafetensors };

// NOT_FOUND for a missing file; INVALID_ARGUMENT naming the file (and tensor,
// where one is at fault) for anything that is not a well-formed checkpoint.
absl::StatusOr<Model> ReadCheckpoint(const std::string& path,
                                     CheckpointFormat* format = nullptr);

enum class OutputKind { kFloat, kInt8 };

// Writes `tensors` to `path` (.pt or .safetensors) through a temporary file and
// a rename.
//   kFloat: every int8 tensor dequantized to float32; keys, shapes and order as
//   in the input,
//           so `model.load_state_dict(torch.load(path))` accepts it.
//   kInt8:  int8 tensors as int8 under their own name, plus "<name>.__scale__"
//   (float32, one
//           value or one per index of dimension 0) and, for asymmetric schemes,
//           "<name>.__zero_point__" (int32); w = scale * (q - zero_point).
//           Other tensors as stored.
absl::Status WriteCheckpoint(const std::vector<RebuiltTensor>& tensors,
                             OutputKind kind, const std::string& path);

// The tensors WriteCheckpoint writes, in memory (the SDK's in-memory pulls).
absl::StatusOr<Model> OutputModel(const std::vector<RebuiltTensor>& tensors,
                                  OutputKind kind);
// One tensor an int8 layer becomes in a kInt8 output: its name, dtype and
// shape, and, made from a decoded layer, its bytes.
struct Int8OutputPart {
  std::string name;
  DType dtype = DType::kInt8;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> data;  // empty when laid out in advance
};
// kInt8's rule for one int8 layer `name` of `shape` quantized with `scheme`, in
// file order: the values under `name` (int8, `shape`), "<name>.__scale__"
// (float32, ScaleCount values) and, for asymmetric schemes,
// "<name>.__zero_point__" (int32, as many). The one statement of the rule:
// OutputTensors, the SDK's streamed layout and its writer follow it.
std::vector<Int8OutputPart> Int8OutputParts(const std::string& name,
                                            QuantScheme scheme,
                                            const std::vector<int64_t>& shape);
// The same parts of a decoded layer, their data viewing `q` (valid while it
// is). INTERNAL when q's buffers do not have the sizes the rule gives.
absl::StatusOr<std::vector<Int8OutputPart>> Int8OutputParts(
    const std::string& name, const QuantizedTensor& q);

// The tensors one rebuilt tensor becomes in an output of `kind`, in file order
// (WriteCheckpoint's rule above): for a streamed output
// (streaming_writer.h).
absl::StatusOr<std::vector<Tensor>> OutputTensors(const RebuiltTensor& tensor,
                                                  OutputKind kind);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_H_
