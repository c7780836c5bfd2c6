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

std::vector<uint8_t> SerializeSafetensors(const Model& model);

// Where a tensor goes in a safetensors file, known before its data.
struct TensorLayout {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;  // of its data
};
// The file's first bytes for `tensors` in this order: the 8-byte length and
// the JSON header, exactly as SerializeSafetensors writes them. The data of
// tensor k follows at the header's size plus the bytes of tensors 0..k-1;
// `data_bytes` (optional) receives the sum of every tensor's bytes.
std::string SafetensorsHeader(const std::vector<TensorLayout>& tensors,
                              uint64_t* data_bytes = nullptr);
absl::Status WriteSafetensorsFile(const Model& model, const std::string& path);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_H_
