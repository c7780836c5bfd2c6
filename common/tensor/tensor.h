// Tensors and models as plain data: a name, a shape, a dtype and little-endian
// bytes. Everything that reads, packs or writes weights speaks these structs;
// no library types leak in. Plain values: not synchronized, safe to share
// read-only between threads.
#ifndef WEIGHTCAST_COMMON_TENSOR_TENSOR_H_
#define WEIGHTCAST_COMMON_TENSOR_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace weightcast {

enum class DType {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt8,
  kUInt8,
  kInt16,
  kInt32,
  kInt64,
  kBool
};

size_t DTypeSize(DType dtype);
bool IsFloatingPoint(DType dtype);
absl::string_view DTypeName(DType dtype);  // "float32", "int64", ...
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
  std::vector<uint8_t>
      data;  // NumElements() * DTypeSize(dtype) bytes, little-endian

  int64_t NumElements() const;
};

struct Model {
  std::vector<Tensor> tensors;  // in checkpoint order; names are unique
};

// Product of the dimensions; an empty shape is a scalar (1 element).
// Returns an error naming `what` when a dimension is negative or the product
// overflows int64.
absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape,
                                           absl::string_view what);

// Converts any floating-point or integer tensor to float32 values.
// NaN or Inf is an error naming the tensor; so is a data size that does not
// match the shape.
absl::StatusOr<std::vector<float>> ToFloat32(const Tensor& tensor);

// OK when every element of a floating-point tensor is finite (integer tensors
// always are); otherwise an error naming the tensor and the first bad element.
// Allocates nothing.
absl::Status CheckFinite(const Tensor& tensor);

// A float32 tensor holding `values`.
Tensor MakeFloat32Tensor(std::string name, std::vector<int64_t> shape,
                         absl::Span<const float> values);

float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);  // round to nearest even

std::string ShapeToString(absl::Span<const int64_t> shape);  // "[4096, 1024]"

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_TENSOR_TENSOR_H_
