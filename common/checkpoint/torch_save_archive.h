// The layout of a torch.save file (the zip archive `torch.load` reads) of a
// dict of tensors, computed from the tensors' names, dtypes and shapes alone,
// so the streaming writer (streaming_writer.h) can put each tensor's bytes at
// their place as they arrive, like a safetensors output, and no caller holds
// the model. Every record is stored (not compressed) under "archive/", its
// data aligned to 64 bytes as PyTorch's writer aligns it: data.pkl (protocol 2
// pickle of a dict of torch._utils._rebuild_tensor_v2 calls, one storage per
// tensor), version ("3"), then data/0, data/1, ... in tensor order. Sizes and
// offsets of 4 GiB and more use ZIP64 fields. What is known only when a
// tensor's bytes have passed is its CRC-32: Finish() gives the bytes that
// need them (each local header's CRC field and the central directory).
// Immutable after Create; thread-safe.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_TORCH_SAVE_ARCHIVE_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_TORCH_SAVE_ARCHIVE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/safetensors.h"

namespace weightcast {

// Bytes to put at an offset of the file.
struct FilePiece {
  uint64_t offset = 0;
  std::string bytes;
};

class TorchSaveArchive {
 public:
  // INVALID_ARGUMENT when a tensor's bytes do not match its dtype and shape.
  // `force_zip64`: ZIP64 fields whatever the sizes (tests of that path
  // without writing 4 GiB).
  static absl::StatusOr<TorchSaveArchive> Create(
      const std::vector<TensorLayout>& tensors, bool force_zip64 = false);

  // Everything but the tensors' data and the CRC-dependent bytes: to write
  // first.
  const std::vector<FilePiece>& pieces() const { return pieces_; }
  // Where tensor k's data goes.
  uint64_t data_offset(size_t k) const {
    return entries_[kFirstTensor + k].data;
  }
  // The file's size.
  uint64_t size() const { return size_; }
  // The bytes that hold each tensor's CRC-32 (of its data, in order), to write
  // last.
  std::vector<FilePiece> Finish(const std::vector<uint32_t>& tensor_crcs) const;

 private:
  struct Entry {
    std::string name;
    uint64_t header = 0;  // offset of its local header
    uint64_t data = 0;    // offset of its data
    uint64_t bytes = 0;
    uint32_t crc = 0;  // known now for data.pkl and version
  };
  static constexpr size_t kFirstTensor = 2;  // after data.pkl and version

  bool zip64_ = false;
  std::vector<Entry> entries_;
  std::vector<FilePiece> pieces_;
  uint64_t central_directory_ = 0;  // its offset
  uint64_t size_ = 0;
};

// CRC-32 (ISO-HDLC, zip's) of `size` bytes continuing from `crc` (0 to start).
uint32_t Crc32(uint32_t crc, const uint8_t* data, size_t size);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_TORCH_SAVE_ARCHIVE_H_
