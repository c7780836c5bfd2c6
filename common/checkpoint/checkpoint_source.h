// A checkpoint read one tensor at a time: the names, shapes and dtypes of its
// tensors up front, each tensor's data when asked for. A safetensors file is
// read on demand (its header when opened, a tensor's bytes by a positioned read
// when asked), so memory follows the largest tensor read at once, not the
// model. A torch.save archive likewise: its data.pkl when opened, a tensor's
// storage record when asked (one read at a time). A TorchScript archive is read
// whole when opened and held (libtorch loads the module whole). Thread-safe:
// Read() may be called from many threads at once.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_SOURCE_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/checkpoint.h"
#include "common/tensor/tensor.h"

namespace weightcast {

class CheckpointSource {
 public:
  // As ReadCheckpoint for a missing or malformed file, except that the data
  // of a safetensors or torch.save file is not checked yet (Read() checks each
  // tensor's: finite, its bytes all there).
  static absl::StatusOr<std::unique_ptr<CheckpointSource>> Open(
      const std::string& path);
  virtual ~CheckpointSource() = default;

  CheckpointFormat format() const { return format_; }
  // Every tensor's name, shape and dtype, data empty, in checkpoint order.
  const std::vector<Tensor>& headers() const { return headers_; }
  size_t size() const { return headers_.size(); }

  // Tensor `index` with its data; INVALID_ARGUMENT naming the file and tensor
  // for NaN or Inf, DATA_LOSS when the file was cut short. The caller owns the
  // copy.
  virtual absl::StatusOr<Tensor> Read(size_t index) const = 0;
  // Rows `first_row` .. `first_row + rows - 1` of tensor `index`, a row being
  // one index of dimension 0 (a tensor of fewer than two dimensions is one
  // row): shape [rows, the product of the other dimensions], the tensor's
  // dtype. Errors as Read()'s (NaN or Inf in these rows), OUT_OF_RANGE for rows
  // outside the tensor. A safetensors file reads only those rows' bytes; the
  // default slices Read().
  virtual absl::StatusOr<Tensor> ReadRows(size_t index, int64_t first_row,
                                          int64_t rows) const;
  // Reads every tensor's data once, as Read() would, and returns Read()'s
  // first error. A safetensors file is read in chunks of at most
  // kCheckChunkBytes: memory does not follow even the largest tensor.
  virtual absl::Status CheckData() const;
  static constexpr size_t kCheckChunkBytes = 8 << 20;
  // Every tensor (the whole model in memory: for small models only).
  absl::StatusOr<Model> ReadAll() const;

 protected:
  CheckpointSource(CheckpointFormat format, std::vector<Tensor> headers)
      : format_(format), headers_(std::move(headers)) {}

 private:
  const CheckpointFormat format_;
  const std::vector<Tensor> headers_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_CHECKPOINT_SOURCE_H_
