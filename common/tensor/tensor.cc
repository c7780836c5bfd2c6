#include "common/tensor/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weightcast {
namespace {

struct DTypeInfo {
  DType dtype;
  absl::string_view name;
  size_t size;
  bool floating;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kFloat32, "float32", 4, true},
    {DType::kFloat16, "float16", 2, true},
    {DType::kBFloat16, "bfloat16", 2, true},
    {DType::kFloat64, "float64", 8, true},
    {DType::kInt8, "int8", 1, false},
    {DType::kUInt8, "uint8", 1, false},
    {DType::kInt16, "int16", 2, false},
    {DType::kInt32, "int32", 4, false},
    {DType::kInt64, "int64", 8, false},
    {DType::kBool, "bool", 1, false},
};

const DTypeInfo& Info(DType dtype) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // unreachable: every enumerator is listed
}

template <typename T>
T Load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
bool IsFloatingPoint(DType dtype) { return Info(dtype).floating; }
absl::string_view DTypeName(DType dtype) { return Info(dtype).name; }

absl::StatusOr<DType> DTypeFromName(absl::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

int64_t Tensor::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<int64_t> CheckedNumElements(absl::Span<const int64_t> shape,
                                           absl::string_view what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": negative dimension in shape ", ShapeToString(shape)));
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": shape ", ShapeToString(shape), " overflows 64 bits"));
    }
    n *= d;
  }
  return n;
}

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = (bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {  // subnormal half: normalize
    int shift = 0;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3ffu;
    out = sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &out, sizeof(value));
  return value;
}

float BFloat16ToFloat(uint16_t bits) {
  const uint32_t out = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &out, sizeof(value));
  return value;
}

uint16_t FloatToHalf(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const int32_t exponent = static_cast<int32_t>((x >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = x & 0x7fffffu;
  if (((x >> 23) & 0xff) == 0xff)
    return sign | 0x7c00u | (mantissa ? 0x200u : 0);
  if (exponent >= 0x1f) return sign | 0x7c00u;
  if (exponent <= 0) {
    if (exponent < -10) return sign;
    mantissa |= 0x800000u;
    const int shift = 14 - exponent;
    uint32_t half = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t half = (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1)))
    ++half;  // may carry into Inf: correct
  return sign | static_cast<uint16_t>(half);
}

absl::Status CheckFinite(const Tensor& tensor) {
  if (!IsFloatingPoint(tensor.dtype)) return absl::OkStatus();
  const size_t element = DTypeSize(tensor.dtype);
  const size_t count = tensor.data.size() / element;
  const uint8_t* p = tensor.data.data();
  for (size_t i = 0; i < count; ++i, p += element) {
    double value = 0;
    switch (tensor.dtype) {
      case DType::kFloat32:
        value = Load<float>(p);
        break;
      case DType::kFloat16:
        value = HalfToFloat(Load<uint16_t>(p));
        break;
      case DType::kBFloat16:
        value = BFloat16ToFloat(Load<uint16_t>(p));
        break;
      case DType::kFloat64:
        value = Load<double>(p);
        break;
      default:
        break;
    }
    if (!std::isfinite(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor.name, "': element ", i, " is ", value,
                       " (weights must be finite)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ToFloat32(const Tensor& tensor) {
  const int64_t n = tensor.NumElements();
  const size_t element = DTypeSize(tensor.dtype);
  if (n < 0 || tensor.data.size() != static_cast<size_t>(n) * element) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", tensor.name, "': ", tensor.data.size(),
                     " bytes of data for shape ", ShapeToString(tensor.shape),
                     " of ", DTypeName(tensor.dtype)));
  }
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = tensor.data.data();
  for (size_t i = 0; i < out.size(); ++i, p += element) {
    switch (tensor.dtype) {
      case DType::kFloat32:
        out[i] = Load<float>(p);
        break;
      case DType::kFloat16:
        out[i] = HalfToFloat(Load<uint16_t>(p));
        break;
      case DType::kBFloat16:
        out[i] = BFloat16ToFloat(Load<uint16_t>(p));
        break;
      case DType::kFloat64:
        out[i] = static_cast<float>(Load<double>(p));
        break;
      case DType::kInt8:
        out[i] = Load<int8_t>(p);
        break;
      case DType::kUInt8:
        out[i] = Load<uint8_t>(p);
        break;
      case DType::kInt16:
        out[i] = Load<int16_t>(p);
        break;
      case DType::kInt32:
        out[i] = static_cast<float>(Load<int32_t>(p));
        break;
      case DType::kInt64:
        out[i] = static_cast<float>(Load<int64_t>(p));
        break;
      case DType::kBool:
        out[i] = *p ? 1.0f : 0.0f;
        break;
    }
    if (!std::isfinite(out[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor.name, "': element ", i, " is ",
                       out[i], " (weights must be finite)"));
    }
  }
  return out;
}

Tensor MakeFloat32Tensor(std::string name, std::vector<int64_t> shape,
                         absl::Span<const float> values) {
  Tensor tensor{std::move(name), std::move(shape), DType::kFloat32, {}};
  tensor.data.resize(values.size() * sizeof(float));
  if (!values.empty())
    std::memcpy(tensor.data.data(), values.data(), tensor.data.size());
  return tensor;
}

std::string ShapeToString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace weightcast
