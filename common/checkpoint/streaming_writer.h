// Writes a checkpoint while its tensors arrive: the file's layout is computed
// up front from the tensors' names, dtypes and shapes (TensorLayout), its fixed
// bytes written first, and each tensor's bytes go to their offset with pwrite
// as soon as they are known, in any order, so no caller holds a whole model.
// The file is PATH.tmp until Commit() fsyncs it and renames it over PATH.
//   - PATH ending in ".pt" or ".pth": a torch.save archive
//   (torch_save_archive.h); the
//     CRC-32 of each tensor is taken as its bytes pass and written at Commit.
//   - otherwise safetensors, the bytes SerializeSafetensors writes for the
//     same tensors. With `shard_bytes` the output is a directory of
//     model-0000k-of-0000n.safetensors files plus model.safetensors.index.json
//     (the layout transformers' loaders read).
// Thread-safe: Write may run on many threads at once (distinct tensors).
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_STREAMING_WRITER_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_STREAMING_WRITER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/checkpoint/safetensors.h"
#include "common/checkpoint/torch_save_archive.h"
#include "common/tensor/tensor.h"

namespace weightcast {

inline constexpr char kShardIndexName[] = "model.safetensors.index.json";

// Whether `path` names a torch.save output (".pt" or ".pth").
bool IsTorchSavePath(const std::string& path);

class CheckpointStreamWriter {
 public:
  // `shard_bytes` 0: one file at `path`. Else `path` is a directory (created
  // if missing) and a shard holds tensors up to `shard_bytes` of data (a
  // larger tensor alone); safetensors only. INVALID_ARGUMENT for a duplicate
  // name or a size that does not match its dtype and shape. `force_zip64`:
  // TorchSaveArchive's (tests). A file is written as its path plus
  // `temp_suffix` until Commit (another suffix lets two writers of one path
  // be open at once: the later Commit wins).
  static absl::StatusOr<std::unique_ptr<CheckpointStreamWriter>> Create(
      const std::string& path, std::vector<TensorLayout> layout,
      uint64_t shard_bytes = 0, bool force_zip64 = false,
      const std::string& temp_suffix = ".tmp");
  ~CheckpointStreamWriter();  // without Commit: the temporary files removed

  CheckpointStreamWriter(const CheckpointStreamWriter&) = delete;
  CheckpointStreamWriter& operator=(const CheckpointStreamWriter&) = delete;

  // Writes `tensor` at its place (again: overwritten). DATA_LOSS naming the
  // tensor when its name, dtype, shape or size differ from the layout;
  // RESOURCE_EXHAUSTED when the disk is full.
  absl::Status Write(const Tensor& tensor);
  // The same for a tensor's data held elsewhere (no Tensor built around it).
  absl::Status Write(const std::string& name, DType dtype,
                     const std::vector<int64_t>& shape,
                     absl::Span<const uint8_t> data);
  // The same, `bytes` of data produced in parts: `part(offset)` returns the
  // next bytes from `offset` (at least one; valid until the next call), so a
  // large tensor is converted and written a slice at a time.
  absl::Status WriteInParts(
      const std::string& name, DType dtype, const std::vector<int64_t>& shape,
      uint64_t bytes,
      const std::function<absl::Span<const uint8_t>(uint64_t offset)>& part);
  // A tensor whose bytes its caller pushes in order as they become ready (a
  // layer decoded a band of rows at a time): Append writes the next bytes at
  // their place; Finish checks that they add up and marks the tensor written
  // (until then Commit refuses). Used by one thread at a time; the writer
  // must outlive it.
  class Appender {
   public:
    absl::Status Append(absl::Span<const uint8_t> data);
    absl::Status Finish();

   private:
    friend class CheckpointStreamWriter;
    Appender(CheckpointStreamWriter* writer, size_t place)
        : writer_(writer), place_(place) {}
    CheckpointStreamWriter* writer_;
    size_t place_;
    uint64_t offset_ = 0;  // bytes appended so far
    uint32_t crc_ = 0;     // .pt outputs
  };
  // Errors as WriteInParts'; writing the tensor again overwrites it.
  absl::StatusOr<Appender> Begin(const std::string& name, DType dtype,
                                 const std::vector<int64_t>& shape,
                                 uint64_t bytes);
  // FAILED_PRECONDITION naming a tensor not written yet. Then fsyncs and
  // renames each file (and writes the index last).
  absl::Status Commit();

  int shards() const { return static_cast<int>(files_.size()); }

 private:
  struct File {
    std::string path, temp;
    int fd = -1;
  };
  struct Place {
    TensorLayout layout;
    size_t file;
    uint64_t offset;  // in its file
  };
  CheckpointStreamWriter() = default;
  // Opens file.temp and appends `file` to files_.
  absl::Status OpenFile(File file);

  // Constant after Create.
  std::string index_path_;  // sharded output only
  std::string index_json_;
  std::vector<File> files_;
  std::vector<Place> places_;
  absl::flat_hash_map<std::string, size_t> by_name_;
  std::optional<TorchSaveArchive> archive_;  // .pt outputs

  absl::Mutex mu_;
  std::vector<bool> written_ ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> crcs_ ABSL_GUARDED_BY(mu_);  // .pt outputs
  bool committed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_STREAMING_WRITER_H_
