// safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw data. The
// reader validates every field and offset against the file before touching
// data, and names the file and tensor in every error. Pure functions;
// thread-safe.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tensor/tensor.h"

namespace weightcast {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100 << 20;

// Parses a whole safetensors file held in memory; `source` names it in errors.
// Tensors come back in the order of their data offsets (the order they were
// written). As the reference implementation requires, their byte ranges must
// tile the data exactly: INVALID_ARGUMENT naming both tensors for an overlap,
// the tensor after a hole for bytes no tensor covers (or the count of trailing
// bytes).
absl::StatusOr<Model> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                       absl::string_view source);
absl::StatusOr<Model> ReadSafetensorsFile(const std::string& path);

// A safetensors header, validated as ParseSafetensors does (fields, offsets
// within the data, exact tiling) without touching the data: each tensor's name,
// dtype and shape (a Tensor without data) and its byte range [begin, end)
// relative to `data_offset`, in offset order.
struct SafetensorsEntry {
  Tensor tensor;  // data empty
  uint64_t begin = 0;
  uint64_t end = 0;
};
struct SafetensorsHeader {
  uint64_t data_offset = 0;  // 8 + the header's length
  uint64_t data_bytes = 0;
  std::vector<SafetensorsEntry> entries;
};
// Reads only the first 8 + header-length bytes of the file at `path` (at most
// kMaxSafetensorsHeaderBytes); NOT_FOUND when it cannot be opened.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(
    const std::string& path);

std::vector<uint8_t> SerializeSafetensors(const Model& model);

// Where a tensor goes in a safetensors file, known before its data.
struct TensorLayout {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;  // of its data
};
// INVALID_ARGUMENT naming the tensor when `bytes` does not match its dtype and
// shape (or the element count overflows).
absl::Status CheckTensorLayout(const TensorLayout& tensor);
// The file's first bytes for `tensors` in this order: the 8-byte length and
// the JSON header, exactly as SerializeSafetensors writes them. The data of
// tensor k follows at the header's size plus the bytes of tensors 0..k-1;
// `data_bytes` (optional) receives the sum of every tensor's bytes.
std::string SafetensorsHeaderBytes(const std::vector<TensorLayout>& tensors,
                                   uint64_t* data_bytes = nullptr);

// The header's dtype code of `dtype` ("F32", "BF16", ...).
absl::string_view SafetensorsDTypeCode(DType dtype);
absl::Status WriteSafetensorsFile(const Model& model, const std::string& path);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_H_
