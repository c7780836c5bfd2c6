#include "common/checkpoint/checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/bytes.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/libtorch_io.h"
#include "common/checkpoint/safetensors.h"
#include "common/checkpoint/streaming_writer.h"
#include "common/checkpoint/torch_checkpoint.h"

namespace weightcast {
namespace {

// Every floating-point weight must be finite.
absl::Status CheckAllFinite(const Model& model, const std::string& path) {
  for (const Tensor& tensor : model.tensors) {
    if (absl::Status status = weightcast::CheckFinite(tensor); !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Model> ReadByContent(const std::string& path,
                                    CheckpointFormat* format) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  char head[9] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(head, sizeof(head));
  const std::streamsize got = in.gcount();
  if (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<RecordReader> records,
                     OpenTorchArchive(path));
    if (records->HasRecord("constants.pkl")) {
      *format = CheckpointFormat::kTorchScript;
      return ReadTorchScriptModule(path);
    }
    *format = CheckpointFormat::kTorchSave;
    return ReadTorchSave(*records, path);
  }
  if (got >= 2 && static_cast<uint8_t>(head[0]) == 0x80 && head[1] == 0x02) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": a legacy (pre-1.6, non-zip) torch.save file; re-save "
                     "it with a current torch.save"));
  }
  if (got == 9 && head[8] == '{') {
    *format = CheckpointFormat::kSafetensors;
    return ReadSafetensorsFile(path);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path,
                   ": not a checkpoint (expected a torch.save or "
                   "torch.jit.save zip archive, or safetensors)"));
}

}  // namespace

absl::StatusOr<Model> ReadCheckpoint(const std::string& path,
                                     CheckpointFormat* format) {
  CheckpointFormat ignored;
  ASSIGN_OR_RETURN(Model model,
                   ReadByContent(path, format ? format : &ignored));
  RETURN_IF_ERROR(CheckAllFinite(model, path));
  return model;
}

std::vector<Int8OutputPart> Int8OutputParts(const std::string& name,
                                            QuantScheme scheme,
                                            const std::vector<int64_t>& shape) {
  const std::vector<int64_t> channels{ScaleCount(scheme, shape)};
  std::vector<Int8OutputPart> parts{
      {name, DType::kInt8, shape, {}},
      {absl::StrCat(name, ".__scale__"), DType::kFloat32, channels, {}}};
  if (!IsSymmetric(scheme)) {
    parts.push_back(
        {absl::StrCat(name, ".__zero_point__"), DType::kInt32, channels, {}});
  }
  return parts;
}

absl::StatusOr<std::vector<Int8OutputPart>> Int8OutputParts(
    const std::string& name, const QuantizedTensor& q) {
  std::vector<Int8OutputPart> parts = Int8OutputParts(name, q.scheme, q.shape);
  const absl::Span<const uint8_t> data[] = {
      AsBytes(absl::MakeConstSpan(q.values)),
      AsBytes(absl::MakeConstSpan(q.scales)),
      AsBytes(absl::MakeConstSpan(q.zero_points))};
  for (size_t i = 0; i < parts.size(); ++i) {
    Int8OutputPart& part = parts[i];
    ASSIGN_OR_RETURN(const int64_t elements,
                     CheckedNumElements(part.shape, part.name));
    if (data[i].size() !=
        static_cast<uint64_t>(elements) * DTypeSize(part.dtype)) {
      return absl::InternalError(absl::StrCat(
          "tensor '", part.name, "' holds ", data[i].size(), " bytes, not the ",
          elements, " values its shape gives"));
    }
    part.data = data[i];
  }
  return parts;
}

absl::StatusOr<std::vector<Tensor>> OutputTensors(const RebuiltTensor& tensor,
                                                  OutputKind kind) {
  std::vector<Tensor> out;
  if (kind == OutputKind::kFloat || !tensor.int8) {
    ASSIGN_OR_RETURN(Tensor t, kind == OutputKind::kFloat
                                   ? tensor.ToFloatTensor()
                                   : absl::StatusOr<Tensor>(tensor.stored));
    out.push_back(std::move(t));
    return out;
  }
  QuantizedTensor requantized;  // a layer with column scales only
  const QuantizedTensor* int8 = &*tensor.int8;
  if (!tensor.columns.empty()) {
    ASSIGN_OR_RETURN(requantized, tensor.Int8Output());
    int8 = &requantized;
  }
  ASSIGN_OR_RETURN(const std::vector<Int8OutputPart> parts,
                   Int8OutputParts(tensor.name, *int8));
  for (const Int8OutputPart& part : parts) {
    out.push_back(
        Tensor{part.name, part.shape, part.dtype,
               std::vector<uint8_t>(part.data.begin(), part.data.end())});
  }
  return out;
}

absl::StatusOr<Model> OutputModel(const std::vector<RebuiltTensor>& tensors,
                                  OutputKind kind) {
  Model model;
  for (const RebuiltTensor& tensor : tensors) {
    ASSIGN_OR_RETURN(std::vector<Tensor> out, OutputTensors(tensor, kind));
    for (Tensor& t : out) model.tensors.push_back(std::move(t));
  }
  return model;
}

absl::Status WriteCheckpoint(const std::vector<RebuiltTensor>& tensors,
                             OutputKind kind, const std::string& path) {
  ASSIGN_OR_RETURN(const Model model, OutputModel(tensors, kind));
  std::vector<uint8_t> bytes;
  if (IsTorchSavePath(path)) {
    std::vector<TensorLayout> layout;
    for (const Tensor& t : model.tensors)
      layout.push_back({t.name, t.dtype, t.shape, t.data.size()});
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStreamWriter> writer,
                     CheckpointStreamWriter::Create(path, std::move(layout)));
    for (const Tensor& t : model.tensors) RETURN_IF_ERROR(writer->Write(t));
    return writer->Commit();
  } else if (absl::EndsWith(path, ".safetensors")) {
    bytes = SerializeSafetensors(model);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": output must end in .pt, .pth or .safetensors"));
  }
  return WriteFileAtomically(path, bytes);
}

}  // namespace weightcast
