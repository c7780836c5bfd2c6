#include "common/checkpoint/libtorch_io.h"

#include <caffe2/serialize/inline_container.h>
#include <sys/mman.h>
#include <torch/script.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/pickle.h"
#include "common/tensor/strided_extent.h"

namespace weightcast {
namespace {

constexpr std::pair<DType, c10::ScalarType> kScalarTypes[] = {
    {DType::kFloat32, c10::kFloat},     {DType::kFloat16, c10::kHalf},
    {DType::kBFloat16, c10::kBFloat16}, {DType::kFloat64, c10::kDouble},
    {DType::kInt8, c10::kChar},         {DType::kUInt8, c10::kByte},
    {DType::kInt16, c10::kShort},       {DType::kInt32, c10::kInt},
    {DType::kInt64, c10::kLong},        {DType::kBool, c10::kBool},
};

// Copies a record out of libtorch's buffer without holding both copies in
// memory at once: the output grows chunk by chunk (reserve does not touch
// pages), and the pages of the source already copied are returned to the kernel
// (MADV_DONTNEED; the buffer is freed right after and never read again). A 1
// GiB record then costs 1 GiB plus one chunk, not 2 GiB.
std::vector<uint8_t> MoveOut(uint8_t* source, size_t size) {
  constexpr size_t kChunk = 32 << 20;
  std::vector<uint8_t> out;
  out.reserve(size);
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t released =
      (reinterpret_cast<uintptr_t>(source) + page - 1) & ~(page - 1);
  for (size_t done = 0; done < size;) {
    const size_t n = std::min(kChunk, size - done);
    out.insert(out.end(), source + done, source + done + n);
    done += n;
    const uintptr_t copied_end =
        (reinterpret_cast<uintptr_t>(source) + done) & ~(page - 1);
    if (size > kChunk && copied_end > released) {
      madvise(reinterpret_cast<void*>(released), copied_end - released,
              MADV_DONTNEED);
      released = copied_end;
    }
  }
  return out;
}

class TorchArchive : public RecordReader {
 public:
  explicit TorchArchive(
      std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader,
      std::string path)
      : reader_(std::move(reader)), path_(std::move(path)) {}

  bool HasRecord(const std::string& name) override {
    try {
      return reader_->hasRecord(name);
    } catch (const std::exception&) {
      return false;
    }
  }

  absl::StatusOr<std::vector<uint8_t>> ReadRecord(
      const std::string& name) override {
    try {
      auto [data, size] = reader_->getRecord(name);
      return MoveOut(static_cast<uint8_t*>(data.get()), size);
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path_, ": record ", name, " does not fit in memory"));
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": record ", name, ": ", BriefLibtorchError(e)));
    }
  }

 private:
  const std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
  const std::string path_;
};

// torch::jit::load accepts a tensor whose storage record is shorter than its
// sizes, strides and offset reach, and reads (or writes) past the allocation
// when the tensor is used: every tensor of an untrusted module is checked
// against its storage before anything touches its data.
absl::Status CheckWithinStorage(const std::string& name, const at::Tensor& t) {
  if (t.layout() != c10::kStrided || !t.has_storage()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' ", ShapeToString(t.sizes().vec()),
                     " is not dense"));
  }
  return CheckStridedExtent(name, t.sizes().vec(), t.strides().vec(),
                            t.storage_offset(), t.element_size(),
                            t.storage().nbytes());
}

absl::StatusOr<Tensor> FromAten(const std::string& name,
                                const at::Tensor& value) {
  const at::Tensor t = value.detach().to(c10::kCPU).contiguous();
  for (const auto& [dtype, scalar] : kScalarTypes) {
    if (scalar != t.scalar_type()) continue;
    Tensor out{name,
               std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
               dtype,
               {}};
    out.data.resize(t.numel() * t.element_size());
    if (!out.data.empty())
      std::memcpy(out.data.data(), t.data_ptr(), out.data.size());
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", name, "': unsupported dtype ",
                   c10::toString(t.scalar_type())));
}

}  // namespace

std::string BriefLibtorchError(const std::exception& e) {
  const auto* error = dynamic_cast<const c10::Error*>(&e);
  const std::string what =
      error != nullptr ? error->what_without_backtrace() : e.what();
  size_t begin = 0;
  while (begin < what.size()) {
    const size_t end = std::min(what.find('\n', begin), what.size());
    if (end > begin) return what.substr(begin, end - begin);
    begin = end + 1;
  }
  return "(no message)";
}

absl::Status CheckTorchScriptArchive(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    absl::flat_hash_map<std::string, uint64_t> record_bytes;
    const std::pair<const char*, const char*> pickles[] = {
        {"data.pkl", "data/"}, {"constants.pkl", "constants/"}};
    for (const auto& [pickle, folder] : pickles) {
      if (!reader.hasRecord(pickle)) continue;
      auto [data, size] = reader.getRecord(pickle);
      ASSIGN_OR_RETURN(
          const PickleDocument document,
          ReadPickle(absl::MakeConstSpan(
                         static_cast<const uint8_t*>(data.get()), size),
                     absl::StrCat(path, ": ", pickle)));
      for (const auto& value : document.values) {
        const TensorView& storage = value->tensor;
        if (value->kind != PickleValue::Kind::kStorage ||
            storage.storage_numel == 0)
          continue;  // libtorch reads no record
        const std::string record = absl::StrCat(folder, storage.storage_key);
        auto [known, added] = record_bytes.try_emplace(record, 0);
        if (added) known->second = std::get<1>(reader.getRecord(record));
        if (StorageBytes(storage) > known->second) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": record ", record, " holds ", known->second,
                           " bytes but ", pickle, " declares a storage of ",
                           storage.storage_numel, " ", DTypeName(storage.dtype),
                           " elements"));
        }
      }
    }
    // libtorch's unpickler allocates the length a string claims before it reads
    // it (a 3 KB file claimed 754 MB): the source-range pickles go through our
    // bounded reader first too.
    for (const std::string& record : reader.getAllRecords()) {
      if (!absl::EndsWith(record, ".debug_pkl")) continue;
      auto [data, size] = reader.getRecord(record);
      RETURN_IF_ERROR(
          ReadPickle(absl::MakeConstSpan(
                         static_cast<const uint8_t*>(data.get()), size),
                     absl::StrCat(path, ": ", record))
              .status());
    }
    return absl::OkStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": a record does not fit in memory"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a readable TorchScript archive: ", BriefLibtorchError(e)));
  }
}

absl::StatusOr<std::unique_ptr<RecordReader>> OpenTorchArchive(
    const std::string& path) {
  try {
    auto reader =
        std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    return std::unique_ptr<RecordReader>(
        std::make_unique<TorchArchive>(std::move(reader), path));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a readable zip archive: ", BriefLibtorchError(e)));
  }
}

absl::StatusOr<Model> ReadTorchScriptModule(const std::string& path) {
  RETURN_IF_ERROR(CheckTorchScriptArchive(path));
  try {
    torch::jit::Module module = torch::jit::load(path, c10::kCPU);
    Model model;
    const auto add = [&](const std::string& name,
                         const at::Tensor& value) -> absl::Status {
      if (absl::Status fits = CheckWithinStorage(name, value); !fits.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": not a loadable TorchScript module: ", fits.message()));
      }
      auto tensor = FromAten(name, value);
      if (!tensor.ok())
        return absl::Status(
            tensor.status().code(),
            absl::StrCat(path, ": ", tensor.status().message()));
      model.tensors.push_back(std::move(*tensor));
      return absl::OkStatus();
    };
    for (const auto& parameter : module.named_parameters(/*recurse=*/true))
      RETURN_IF_ERROR(add(parameter.name, parameter.value));
    for (const auto& buffer : module.named_buffers(/*recurse=*/true))
      RETURN_IF_ERROR(add(buffer.name, buffer.value));
    return model;
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": the TorchScript module does not fit in memory"));
  } catch (const std::exception& e) {
    // Damaged code/ sources make the TorchScript compiler throw ErrorReport or
    // runtime_error.
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a loadable TorchScript module: ", BriefLibtorchError(e)));
  }
}

}  // namespace weightcast
