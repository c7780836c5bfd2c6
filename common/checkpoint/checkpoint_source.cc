#include "common/checkpoint/checkpoint_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/libtorch_io.h"
#include "common/checkpoint/safetensors.h"
#include "common/checkpoint/torch_checkpoint.h"

namespace weightcast {
namespace {

// The file's first 9 bytes (fewer when it is shorter).
std::string Head(const std::string& path) {
  char head[9] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(head, sizeof(head));
  return std::string(head, static_cast<size_t>(in.gcount()));
}

bool IsSafetensors(const std::string& head) {
  return head.size() == 9 && head[8] == '{';
}

bool IsZipArchive(const std::string& head) {
  return head.size() >= 4 && head.compare(0, 4, "PK\x03\x04") == 0;
}

// The byte range of rows [first_row, first_row + rows) of `header` and the
// chunk's shape; OUT_OF_RANGE outside the tensor.
absl::StatusOr<std::pair<uint64_t, uint64_t>> RowBytes(const Tensor& header,
                                                       int64_t first_row,
                                                       int64_t rows,
                                                       Tensor* chunk) {
  ASSIGN_OR_RETURN(
      const int64_t elements,
      CheckedNumElements(header.shape,
                         absl::StrCat("tensor '", header.name, "'")));
  const int64_t total_rows = header.shape.size() >= 2 ? header.shape[0] : 1;
  if (first_row < 0 || rows < 0 || total_rows <= 0 || first_row > total_rows ||
      rows > total_rows - first_row) {
    return absl::OutOfRangeError(absl::StrCat("tensor '", header.name,
                                              "': rows ", first_row, "+", rows,
                                              " of ", total_rows));
  }
  const int64_t cols = elements / total_rows;
  const uint64_t row_bytes =
      static_cast<uint64_t>(cols) * DTypeSize(header.dtype);
  chunk->name = header.name;
  chunk->shape = {rows, cols};
  chunk->dtype = header.dtype;
  return std::make_pair(static_cast<uint64_t>(first_row) * row_bytes,
                        static_cast<uint64_t>(rows) * row_bytes);
}

// Rows of a tensor held in memory.
absl::StatusOr<Tensor> SliceRows(const Tensor& tensor, int64_t first_row,
                                 int64_t rows) {
  Tensor chunk;
  ASSIGN_OR_RETURN(const auto range, RowBytes(tensor, first_row, rows, &chunk));
  if (range.first + range.second > tensor.data.size()) {
    return absl::DataLossError(absl::StrCat("tensor '", tensor.name,
                                            "': data shorter than its shape"));
  }
  chunk.data.assign(tensor.data.begin() + range.first,
                    tensor.data.begin() + range.first + range.second);
  return chunk;
}

std::vector<Tensor> HeadersOf(const std::vector<Tensor>& tensors) {
  std::vector<Tensor> headers;
  headers.reserve(tensors.size());
  for (const Tensor& t : tensors)
    headers.push_back({t.name, t.shape, t.dtype, {}});
  return headers;
}

// A safetensors file: positioned reads of one tensor's byte range.
class SafetensorsSource : public CheckpointSource {
 public:
  SafetensorsSource(std::string path, int fd, SafetensorsHeader header,
                    std::vector<Tensor> headers)
      : CheckpointSource(CheckpointFormat::kSafetensors, std::move(headers)),
        path_(std::move(path)),
        fd_(fd),
        header_(std::move(header)) {}
  ~SafetensorsSource() override { ::close(fd_); }

  absl::StatusOr<Tensor> Read(size_t index) const override {
    if (index >= header_.entries.size())
      return absl::OutOfRangeError(absl::StrCat(path_, ": no tensor ", index));
    const SafetensorsEntry& entry = header_.entries[index];
    Tensor tensor = entry.tensor;
    tensor.data.resize(entry.end - entry.begin);
    RETURN_IF_ERROR(
        ReadAt(entry.begin, absl::MakeSpan(tensor.data), tensor.name));
    if (absl::Status finite = CheckFinite(tensor); !finite.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", finite.message()));
    }
    return tensor;
  }

  absl::StatusOr<Tensor> ReadRows(size_t index, int64_t first_row,
                                  int64_t rows) const override {
    if (index >= header_.entries.size())
      return absl::OutOfRangeError(absl::StrCat(path_, ": no tensor ", index));
    const SafetensorsEntry& entry = header_.entries[index];
    Tensor chunk;
    ASSIGN_OR_RETURN(const auto range,
                     RowBytes(entry.tensor, first_row, rows, &chunk));
    if (range.first + range.second > entry.end - entry.begin) {
      return absl::DataLossError(absl::StrCat(path_, ": tensor '",
                                              entry.tensor.name,
                                              "': data shorter than shape"));
    }
    chunk.data.resize(range.second);
    RETURN_IF_ERROR(ReadAt(entry.begin + range.first,
                           absl::MakeSpan(chunk.data), entry.tensor.name));
    if (absl::Status finite = CheckFinite(chunk); !finite.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", finite.message()));
    }
    return chunk;
  }

  absl::Status CheckData() const override {
    std::vector<uint8_t> buffer;
    for (size_t index = 0; index < header_.entries.size(); ++index) {
      const SafetensorsEntry& entry = header_.entries[index];
      const uint64_t element = DTypeSize(entry.tensor.dtype);
      const uint64_t step = kCheckChunkBytes / element * element;
      // Bounded: each round checks up to `step` bytes of the tensor.
      for (uint64_t at = entry.begin; at < entry.end; at += step) {
        const uint64_t bytes = std::min(step, entry.end - at);
        buffer.resize(bytes);
        RETURN_IF_ERROR(ReadAt(at, absl::MakeSpan(buffer), entry.tensor.name));
        Tensor chunk{entry.tensor.name,
                     {static_cast<int64_t>(bytes / element)},
                     entry.tensor.dtype,
                     std::move(buffer)};
        const bool finite = CheckFinite(chunk).ok();
        buffer = std::move(chunk.data);
        // Read() names the first bad element of the whole tensor.
        if (!finite) return Read(index).status();
      }
    }
    return absl::OkStatus();
  }

 private:
  // `out.size()` bytes at `offset` of the data; DATA_LOSS naming `tensor`.
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out,
                      const std::string& tensor) const {
    uint64_t done = 0;
    // Bounded: each round reads at least one byte or returns.
    while (done < out.size()) {
      const ssize_t got =
          ::pread(fd_, out.data() + done, out.size() - done,
                  static_cast<off_t>(header_.data_offset + offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return absl::DataLossError(absl::StrCat(
            path_, ": tensor '", tensor,
            "': ", got < 0 ? std::strerror(errno) : "the file was cut short"));
      }
      done += static_cast<uint64_t>(got);
    }
    return absl::OkStatus();
  }

  const std::string path_;
  const int fd_;  // owned
  const SafetensorsHeader header_;
};

// A torch.save archive: its data.pkl read when opened, a tensor's storage
// record when the tensor is asked for.
class TorchSaveSource : public CheckpointSource {
 public:
  TorchSaveSource(std::string path, std::unique_ptr<RecordReader> records,
                  TorchSaveViews views)
      : CheckpointSource(CheckpointFormat::kTorchSave, HeadersOf(views)),
        path_(path),
        records_(std::move(records)),
        reader_(*records_, std::move(path), std::move(views)) {}

  absl::StatusOr<Tensor> Read(size_t index) const override {
    absl::StatusOr<Tensor> tensor;
    {
      absl::MutexLock lock(&mu_);  // the reader is for one thread at a time
      tensor = reader_.Read(index);
    }
    if (!tensor.ok()) return tensor.status();
    if (absl::Status finite = CheckFinite(*tensor); !finite.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", finite.message()));
    }
    return tensor;
  }

  absl::StatusOr<Tensor> ReadRows(size_t index, int64_t first_row,
                                  int64_t rows) const override {
    if (index >= size())
      return absl::OutOfRangeError(absl::StrCat(path_, ": no tensor ", index));
    Tensor chunk;
    RETURN_IF_ERROR(
        RowBytes(headers()[index], first_row, rows, &chunk).status());
    {
      absl::MutexLock lock(&mu_);
      ASSIGN_OR_RETURN(chunk.data, reader_.ReadRows(index, first_row, rows));
    }
    if (absl::Status finite = CheckFinite(chunk); !finite.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": ", finite.message()));
    }
    return chunk;
  }

 private:
  static std::vector<Tensor> HeadersOf(const TorchSaveViews& views) {
    std::vector<Tensor> headers;
    headers.reserve(views.size());
    for (const auto& [name, view] : views)
      headers.push_back({name, view.shape, view.dtype, {}});
    return headers;
  }

  const std::string path_;
  mutable absl::Mutex mu_;
  const std::unique_ptr<RecordReader> records_;  // read through reader_ only
  mutable TorchSaveReader reader_ ABSL_GUARDED_BY(mu_);
};

// Any other format: read whole when opened.
class WholeSource : public CheckpointSource {
 public:
  WholeSource(CheckpointFormat format, Model model)
      : CheckpointSource(format, HeadersOf(model.tensors)),
        model_(std::move(model)) {}

  absl::StatusOr<Tensor> Read(size_t index) const override {
    if (index >= model_.tensors.size())
      return absl::OutOfRangeError(absl::StrCat("no tensor ", index));
    return model_.tensors[index];
  }

  absl::StatusOr<Tensor> ReadRows(size_t index, int64_t first_row,
                                  int64_t rows) const override {
    if (index >= model_.tensors.size())
      return absl::OutOfRangeError(absl::StrCat("no tensor ", index));
    return SliceRows(model_.tensors[index], first_row, rows);
  }

 private:
  const Model model_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointSource>> CheckpointSource::Open(
    const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error))
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  const std::string head = Head(path);
  if (IsSafetensors(head)) {
    ASSIGN_OR_RETURN(SafetensorsHeader header, ReadSafetensorsHeader(path));
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    std::vector<Tensor> headers;
    headers.reserve(header.entries.size());
    for (const SafetensorsEntry& entry : header.entries)
      headers.push_back(entry.tensor);
    return std::unique_ptr<CheckpointSource>(
        new SafetensorsSource(path, fd, std::move(header), std::move(headers)));
  }
  if (IsZipArchive(head)) {
    ASSIGN_OR_RETURN(std::unique_ptr<RecordReader> records,
                     OpenTorchArchive(path));
    if (!records->HasRecord("constants.pkl")) {  // not TorchScript
      ASSIGN_OR_RETURN(TorchSaveViews views, IndexTorchSave(*records, path));
      return std::unique_ptr<CheckpointSource>(
          new TorchSaveSource(path, std::move(records), std::move(views)));
    }
  }
  CheckpointFormat format;
  ASSIGN_OR_RETURN(Model model, ReadCheckpoint(path, &format));
  return std::unique_ptr<CheckpointSource>(
      new WholeSource(format, std::move(model)));
}

absl::StatusOr<Tensor> CheckpointSource::ReadRows(size_t index,
                                                  int64_t first_row,
                                                  int64_t rows) const {
  ASSIGN_OR_RETURN(const Tensor tensor, Read(index));
  return SliceRows(tensor, first_row, rows);
}

absl::Status CheckpointSource::CheckData() const {
  for (size_t i = 0; i < size(); ++i) RETURN_IF_ERROR(Read(i).status());
  return absl::OkStatus();
}

absl::StatusOr<Model> CheckpointSource::ReadAll() const {
  Model model;
  model.tensors.reserve(size());
  for (size_t i = 0; i < size(); ++i) {
    ASSIGN_OR_RETURN(Tensor tensor, Read(i));
    model.tensors.push_back(std::move(tensor));
  }
  return model;
}

}  // namespace weightcast
