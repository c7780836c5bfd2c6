#include "common/checkpoint/torch_checkpoint.h"

#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

using Kind = PickleValue::Kind;

absl::Status Invalid(absl::string_view source, absl::string_view tensor,
                     absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      source, tensor.empty() ? "" : absl::StrCat(": tensor '", tensor, "'"),
      ": ", what));
}

const PickleRef* Lookup(const PickleValue& dict, absl::string_view key) {
  for (size_t i = 0; i + 1 < dict.items.size(); i += 2) {
    if (dict.items[i]->kind == Kind::kString && dict.items[i]->text == key)
      return &dict.items[i + 1];
  }
  return nullptr;
}

bool IsTensorDict(const PickleValue& v) {
  if (v.kind != Kind::kDict || v.items.empty()) return false;
  for (size_t i = 1; i < v.items.size(); i += 2) {
    if (v.items[i]->kind != Kind::kTensor) return false;
  }
  return true;
}

// Checks a view against its storage: every element it addresses lies inside the
// storage.
absl::Status CheckView(const TensorView& view, absl::string_view source,
                       absl::string_view name) {
  ASSIGN_OR_RETURN(
      const int64_t elements,
      CheckedNumElements(view.shape,
                         absl::StrCat(source, ": tensor '", name, "'")));
  if (view.offset < 0) return Invalid(source, name, "negative storage offset");
  if (elements == 0) return absl::OkStatus();
  int64_t last = view.offset;  // highest element index the view touches
  for (size_t i = 0; i < view.shape.size(); ++i) {
    if (view.strides[i] < 0) return Invalid(source, name, "negative stride");
    const __int128 reach =
        static_cast<__int128>(view.shape[i] - 1) * view.strides[i];
    if (reach > INT64_MAX - last)
      return Invalid(source, name, "view overflows 64 bits");
    last += static_cast<int64_t>(reach);
  }
  if (last >= view.storage_numel) {
    return Invalid(
        source, name,
        absl::StrCat("shape ", ShapeToString(view.shape), " at offset ",
                     view.offset, " needs ", last + 1,
                     " elements, its storage holds ", view.storage_numel));
  }
  return absl::OkStatus();
}

bool IsContiguous(const TensorView& view) {
  int64_t expected = 1;
  for (size_t i = view.shape.size(); i-- > 0;) {
    if (view.shape[i] != 1 && view.strides[i] != expected) return false;
    expected *= view.shape[i];
  }
  return true;
}

// A contiguous view of the whole storage from its start.
bool CoversStorage(const TensorView& view) {
  int64_t elements = 1;
  for (int64_t d : view.shape) elements *= d;
  return view.offset == 0 && elements == view.storage_numel &&
         IsContiguous(view);
}

// Copies the elements of `view` out of `storage` into a contiguous row-major
// buffer.
std::vector<uint8_t> Gather(const TensorView& view,
                            const std::vector<uint8_t>& storage) {
  const size_t element = DTypeSize(view.dtype);
  int64_t elements = 1;
  for (int64_t d : view.shape) elements *= d;
  std::vector<uint8_t> out(static_cast<size_t>(elements) * element);
  if (elements == 0) return out;
  if (IsContiguous(view)) {
    std::memcpy(out.data(), storage.data() + view.offset * element, out.size());
    return out;
  }
  std::vector<int64_t> index(view.shape.size(), 0);
  for (int64_t n = 0; n < elements; ++n) {
    int64_t source = view.offset;
    for (size_t d = 0; d < index.size(); ++d)
      source += index[d] * view.strides[d];
    std::memcpy(out.data() + n * element, storage.data() + source * element,
                element);
    for (size_t d = index.size(); d-- > 0;) {
      if (++index[d] < view.shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, TensorView>>> FindStateDict(
    const PickleRef& root, absl::string_view source) {
  const PickleValue* dict = nullptr;
  if (IsTensorDict(*root)) {
    dict = root;
  } else if (root->kind == Kind::kDict) {
    for (const char* key :
         {"state_dict", "model", "model_state_dict", "module"}) {
      const PickleRef* entry = Lookup(*root, key);
      if (entry && IsTensorDict(**entry)) {
        dict = *entry;
        break;
      }
    }
  }
  if (dict == nullptr) {
    std::vector<std::string> keys;
    if (root->kind == Kind::kDict) {
      for (size_t i = 0; i < root->items.size() && keys.size() < 10; i += 2) {
        keys.push_back(root->items[i]->kind == Kind::kString
                           ? root->items[i]->text
                           : root->items[i]->Describe());
      }
    }
    return Invalid(
        source, "",
        absl::StrCat(
            "no state_dict found: the file holds a ", root->Describe(),
            keys.empty()
                ? ""
                : absl::StrCat(" with keys [", absl::StrJoin(keys, ", "), "]"),
            "; expected a dict of tensors, or one under \"state_dict\" or "
            "\"model\""));
  }
  std::vector<std::pair<std::string, TensorView>> out;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
    if (dict->items[i]->kind != Kind::kString)
      return Invalid(source, "", "a state_dict key is not a string");
    const std::string& name = dict->items[i]->text;
    if (!seen.insert(name).second)
      return Invalid(source, name, "name appears more than once");
    out.emplace_back(name, dict->items[i + 1]->tensor);
  }
  return out;
}

absl::StatusOr<TorchSaveViews> IndexTorchSave(RecordReader& records,
                                              absl::string_view source) {
  if (!records.HasRecord("data.pkl"))
    return Invalid(source, "",
                   "zip archive without data.pkl: not a torch.save file");
  ASSIGN_OR_RETURN(const std::vector<uint8_t> pickle,
                   records.ReadRecord("data.pkl"));
  ASSIGN_OR_RETURN(const PickleDocument document, ReadPickle(pickle, source));
  ASSIGN_OR_RETURN(TorchSaveViews views, FindStateDict(document.root, source));
  // Each storage's first tensor: the others must agree on its dtype and size.
  absl::flat_hash_map<std::string, size_t> first_user;
  // The bytes stored, and those TorchSaveReader::Read reads in order: a
  // storage of one tensor once, a shared one whenever it is not among the
  // last kKeptStorages shared storages read (most recent first). The sums
  // saturate.
  const absl::flat_hash_map<std::string, int> users = StorageUsers(views);
  KeptStorages<bool> kept;  // the reader's, without the records
  uint64_t stored = 0, read = 0;
  const auto add = [](uint64_t& sum, uint64_t bytes) {
    if (__builtin_add_overflow(sum, bytes, &sum)) sum = UINT64_MAX;
  };
  for (size_t i = 0; i < views.size(); ++i) {
    const std::string& name = views[i].first;
    const TensorView& view = views[i].second;
    RETURN_IF_ERROR(CheckView(view, source, name));
    const uint64_t bytes = StorageBytes(view);
    if (users.at(view.storage_key) == 1) {
      add(read, bytes);
    } else if (kept.Find(view.storage_key) == nullptr) {
      add(read, bytes);
      kept.Keep(view.storage_key, true);
    }
    const auto [it, inserted] = first_user.try_emplace(view.storage_key, i);
    if (inserted) {
      add(stored, bytes);
      const std::string record = absl::StrCat("data/", view.storage_key);
      if (!records.HasRecord(record))
        return Invalid(source, name, absl::StrCat("missing record ", record));
      continue;
    }
    const TensorView& first = views[it->second].second;
    if (view.dtype != first.dtype ||
        view.storage_numel != first.storage_numel) {
      return Invalid(source, name,
                     "shares a storage with a tensor of another dtype or size");
    }
  }
  if (read / kMaxStorageRereads > stored) {
    return Invalid(source, "",
                   absl::StrCat("its tensors interleave views of shared "
                                "storages: reading them in order would read ",
                                read, " bytes of the ", stored, " stored"));
  }
  return views;
}

absl::flat_hash_map<std::string, int> StorageUsers(
    const TorchSaveViews& views) {
  absl::flat_hash_map<std::string, int> users;
  for (const auto& entry : views) ++users[entry.second.storage_key];
  return users;
}

TorchSaveReader::TorchSaveReader(RecordReader& records, std::string source,
                                 TorchSaveViews views)
    : records_(records),
      source_(std::move(source)),
      views_(std::move(views)),
      users_(StorageUsers(views_)) {}

absl::StatusOr<std::vector<uint8_t>> TorchSaveReader::ReadStorage(
    size_t index) {
  const auto& [name, view] = views_[index];
  const std::string record = absl::StrCat("data/", view.storage_key);
  ASSIGN_OR_RETURN(std::vector<uint8_t> storage, records_.ReadRecord(record));
  const uint64_t needed = StorageBytes(view);
  if (storage.size() < needed) {
    return Invalid(
        source_, name,
        absl::StrCat("storage record ", record, " holds ", storage.size(),
                     " bytes, its header claims ", needed));
  }
  return storage;
}

absl::StatusOr<const std::vector<uint8_t>*> TorchSaveReader::Keep(
    size_t index) {
  kept_.MakeRoom();  // before reading
  ASSIGN_OR_RETURN(std::vector<uint8_t> record, ReadStorage(index));
  return &kept_.Keep(views_[index].second.storage_key, std::move(record));
}

absl::StatusOr<const std::vector<uint8_t>*> TorchSaveReader::KeptStorage(
    size_t index) {
  if (const std::vector<uint8_t>* kept =
          kept_.Find(views_[index].second.storage_key))
    return kept;
  return Keep(index);
}

absl::StatusOr<Tensor> TorchSaveReader::Read(size_t index) {
  if (index >= views_.size())
    return absl::OutOfRangeError(absl::StrCat(source_, ": no tensor ", index));
  const std::string& name = views_[index].first;
  const TensorView& view = views_[index].second;
  const std::vector<uint8_t>* storage = kept_.Find(view.storage_key);
  if (storage == nullptr && users_.at(view.storage_key) == 1) {
    // A storage of its own, read once: not kept. The common case, a
    // contiguous tensor filling it, takes the record as it is.
    ASSIGN_OR_RETURN(std::vector<uint8_t> own, ReadStorage(index));
    if (own.size() == StorageBytes(view) && CoversStorage(view))
      return Tensor{name, view.shape, view.dtype, std::move(own)};
    return Tensor{name, view.shape, view.dtype, Gather(view, own)};
  }
  if (storage == nullptr) {
    ASSIGN_OR_RETURN(storage, Keep(index));
  }
  return Tensor{name, view.shape, view.dtype, Gather(view, *storage)};
}

absl::StatusOr<std::vector<uint8_t>> TorchSaveReader::ReadRows(
    size_t index, int64_t first_row, int64_t rows) {
  if (index >= views_.size())
    return absl::OutOfRangeError(absl::StrCat(source_, ": no tensor ", index));
  TensorView part = views_[index].second;
  if (part.shape.size() >= 2) {  // rows of dimension 0 (CheckView bounds them)
    part.offset += first_row * part.strides[0];
    part.shape[0] = rows;
  }
  ASSIGN_OR_RETURN(const std::vector<uint8_t>* storage, KeptStorage(index));
  return Gather(part, *storage);
}

absl::StatusOr<Model> ReadTorchSave(RecordReader& records,
                                    absl::string_view source) {
  ASSIGN_OR_RETURN(TorchSaveViews views, IndexTorchSave(records, source));
  TorchSaveReader reader(records, std::string(source), std::move(views));
  Model model;
  model.tensors.reserve(reader.views().size());
  for (size_t i = 0; i < reader.views().size(); ++i) {
    ASSIGN_OR_RETURN(Tensor tensor, reader.Read(i));
    model.tensors.push_back(std::move(tensor));
  }
  return model;
}

}  // namespace weightcast
