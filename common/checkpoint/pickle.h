// A reader for the subset of Python's pickle that torch.save writes (protocol
// 2, plus the protocol-4 opcodes a newer writer may emit). It never executes
// code: globals are names, and only a fixed list of callables (OrderedDict,
// torch's tensor and parameter rebuilders, storage types) is given meaning; any
// other object stays an opaque value that names its class. Every size, index
// and depth is bounded. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_PICKLE_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_PICKLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor/tensor.h"

namespace weightcast {

struct PickleValue;
// Values point at each other without owning (a pickle may build cycles); a
// PickleDocument owns them all.
using PickleRef = PickleValue*;

// A tensor as torch.save describes it: a view into a storage record.
struct TensorView {
  std::string storage_key;  // record "data/<key>" in the archive
  DType dtype = DType::kFloat32;
  int64_t storage_numel = 0;  // elements the storage declares
  int64_t offset = 0;         // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
};

// The bytes of a view's storage. ReadPickle refuses a storage whose bytes
// overflow 64 bits, so for a view it returned this is exact.
inline uint64_t StorageBytes(const TensorView& view) {
  return static_cast<uint64_t>(view.storage_numel) * DTypeSize(view.dtype);
}

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kBytes,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kStorage,
    kTensor,
    kObject
  };
  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string text;  // string, bytes, global/object class name ("module.name")
  std::vector<PickleRef>
      items;          // tuple and list items; dict keys and values alternating
  TensorView tensor;  // kStorage (key, dtype, numel) and kTensor

  std::string Describe()
      const;  // "dict", "tensor", "object argparse.Namespace", ...
};

inline constexpr size_t kMaxPickleStackDepth = 1 << 16;
inline constexpr size_t kMaxPickleMemo = 1 << 20;

// Every value a pickle built, and the one it returned.
struct PickleDocument {
  std::vector<std::unique_ptr<PickleValue>> values;
  PickleRef root = nullptr;
};

// Runs `bytes` through the reader. INVALID_ARGUMENT naming `source` and the
// byte offset for an unknown opcode, a truncated stream, a bad memo reference
// or a malformed tensor.
absl::StatusOr<PickleDocument> ReadPickle(absl::Span<const uint8_t> bytes,
                                          absl::string_view source);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_PICKLE_H_
