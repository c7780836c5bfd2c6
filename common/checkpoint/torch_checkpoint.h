// Reads checkpoints written by torch.save (zip format): finds the state_dict in
// the pickled object (the object itself, or its "state_dict" / "model" /
// "model_state_dict" entry), checks every tensor view against its storage, and
// reads a tensor's storage record when the tensor is asked for. The zip
// records come from a RecordReader (libtorch_io.h provides the real one), so
// this file holds no libtorch code. Thread-compatible.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_TORCH_CHECKPOINT_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_TORCH_CHECKPOINT_H_

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/checkpoint/pickle.h"
#include "common/tensor/tensor.h"

namespace weightcast {

// Named records of an archive ("data.pkl", "data/0", ...), without the
// archive's folder prefix.
class RecordReader {
 public:
  virtual ~RecordReader() = default;
  virtual bool HasRecord(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<uint8_t>> ReadRecord(
      const std::string& name) = 0;
};

// The state_dict of a torch.save archive as (name, tensor view) in order,
// from its data.pkl alone: every view checked against the storage size it
// declares, the tensors sharing a storage agreeing on its dtype and size, and
// every storage's record present. Refused too: views of shared storages so
// interleaved that reading the tensors in order (TorchSaveReader::Read, which
// keeps the last kKeptStorages shared storages) would read more than
// kMaxStorageRereads times the bytes stored. `source` names the file in
// errors.
using TorchSaveViews = std::vector<std::pair<std::string, TensorView>>;
inline constexpr int kMaxStorageRereads = 4;
inline constexpr size_t kKeptStorages = 2;
absl::StatusOr<TorchSaveViews> IndexTorchSave(RecordReader& records,
                                              absl::string_view source);

// The last kKeptStorages storages read, most recent first, each with its
// `Record`: the one keep policy that TorchSaveReader follows and that
// IndexTorchSave plays through (with no records) to bound the rereads.
template <typename Record>
class KeptStorages {
 public:
  // The record kept for storage `key`, moved to the front; null when not kept.
  Record* Find(const std::string& key) {
    for (auto it = kept_.begin(); it != kept_.end(); ++it) {
      if (it->first != key) continue;
      if (it != kept_.begin()) {
        auto found = std::move(*it);
        kept_.erase(it);
        kept_.push_front(std::move(found));
      }
      return &kept_.front().second;
    }
    return nullptr;
  }
  // Drops the least recent storage when full (before a read, so that its
  // record is freed first).
  void MakeRoom() {
    if (kept_.size() >= kKeptStorages) kept_.pop_back();
  }
  // Keeps `record` for storage `key` in front (after MakeRoom).
  Record& Keep(std::string key, Record record) {
    MakeRoom();
    kept_.emplace_front(std::move(key), std::move(record));
    return kept_.front().second;
  }

 private:
  std::deque<std::pair<std::string, Record>> kept_;  // at most kKeptStorages
};

// Reads IndexTorchSave's tensors one at a time: a tensor's storage record
// (checked to hold what the views declare), then the view's elements copied
// out row-major, so that memory follows a storage, not the archive. The
// records of the last kKeptStorages storages read for rows, or shared by
// several tensors, are kept, so that consecutive views of a storage and a
// tensor read a chunk of rows at a time read its record once.
// Thread-compatible; `records` must outlive it.
class TorchSaveReader {
 public:
  TorchSaveReader(RecordReader& records, std::string source,
                  TorchSaveViews views);
  const TorchSaveViews& views() const { return views_; }
  absl::StatusOr<Tensor> Read(size_t index);
  // The bytes of rows [first_row, first_row + rows) of tensor `index`, a row
  // being one index of dimension 0 (a tensor of fewer than two dimensions is
  // one row), row-major; the caller has checked the rows are the tensor's.
  absl::StatusOr<std::vector<uint8_t>> ReadRows(size_t index, int64_t first_row,
                                                int64_t rows);

 private:
  // The checked record of tensor `index`'s storage.
  absl::StatusOr<std::vector<uint8_t>> ReadStorage(size_t index);
  // ReadStorage, kept in front (the least recent dropped first).
  absl::StatusOr<const std::vector<uint8_t>*> Keep(size_t index);
  // The kept record of tensor `index`'s storage, or else Keep.
  absl::StatusOr<const std::vector<uint8_t>*> KeptStorage(size_t index);

  RecordReader& records_;
  const std::string source_;
  const TorchSaveViews views_;
  const absl::flat_hash_map<std::string, int> users_;  // StorageUsers(views_)
  KeptStorages<std::vector<uint8_t>> kept_;
};

// The number of tensors viewing each storage key.
absl::flat_hash_map<std::string, int> StorageUsers(const TorchSaveViews& views);

// Every tensor, IndexTorchSave then TorchSaveReader in order.
absl::StatusOr<Model> ReadTorchSave(RecordReader& records,
                                    absl::string_view source);

// The state_dict inside an unpickled object, as (name, tensor view) in order.
absl::StatusOr<std::vector<std::pair<std::string, TensorView>>> FindStateDict(
    const PickleRef& root, absl::string_view source);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_TORCH_CHECKPOINT_H_
