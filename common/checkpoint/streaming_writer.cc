#include "common/checkpoint/streaming_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace weightcast {
namespace {

absl::Status WriteAt(int fd, const std::string& path, const uint8_t* data,
                     size_t size, uint64_t offset) {
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::pwrite(fd, data + written, size - written,
                               static_cast<off_t>(offset + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    }
    written += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string ShardName(size_t k, size_t n) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, n);
}

}  // namespace

bool IsTorchSavePath(const std::string& path) {
  return absl::EndsWith(path, ".pt") || absl::EndsWith(path, ".pth");
}

absl::StatusOr<std::unique_ptr<CheckpointStreamWriter>>
CheckpointStreamWriter::Create(const std::string& path,
                               std::vector<TensorLayout> layout,
                               uint64_t shard_bytes, bool force_zip64,
                               const std::string& temp_suffix) {
  std::unique_ptr<CheckpointStreamWriter> writer(new CheckpointStreamWriter);
  if (IsTorchSavePath(path)) {
    if (shard_bytes > 0) {
      return absl::InvalidArgumentError(
          "sharded output is safetensors only, not .pt");
    }
    ASSIGN_OR_RETURN(TorchSaveArchive archive,
                     TorchSaveArchive::Create(layout, force_zip64));
    RETURN_IF_ERROR(writer->OpenFile({path, path + temp_suffix}));
    const File& file = writer->files_.back();
    for (const FilePiece& piece : archive.pieces()) {
      RETURN_IF_ERROR(
          WriteAt(file.fd, file.temp,
                  reinterpret_cast<const uint8_t*>(piece.bytes.data()),
                  piece.bytes.size(), piece.offset));
    }
    for (size_t k = 0; k < layout.size(); ++k) {
      if (!writer->by_name_.emplace(layout[k].name, k).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", layout[k].name, "' appears twice"));
      }
      writer->places_.push_back(
          {std::move(layout[k]), 0, archive.data_offset(k)});
    }
    writer->archive_.emplace(std::move(archive));
    absl::MutexLock lock(&writer->mu_);
    writer->written_.assign(writer->places_.size(), false);
    writer->crcs_.assign(writer->places_.size(), 0);
    return writer;
  }
  // Which shard each tensor goes to: a new shard when the next tensor would
  // take the current one over `shard_bytes`.
  std::vector<std::vector<TensorLayout>> shards(1);
  std::vector<size_t> shard_of;
  uint64_t in_shard = 0, total = 0;
  for (TensorLayout& t : layout) {
    RETURN_IF_ERROR(CheckTensorLayout(t));
    if (!writer->by_name_.emplace(t.name, shard_of.size()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "' appears twice"));
    }
    if (shard_bytes > 0 && in_shard > 0 && in_shard + t.bytes > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    in_shard += t.bytes;
    total += t.bytes;
    shard_of.push_back(shards.size() - 1);
    shards.back().push_back(std::move(t));
  }
  std::string dir = path;
  if (shard_bytes > 0) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::PermissionDeniedError(
          absl::StrCat(dir, ": cannot create: ", std::strerror(errno)));
    }
    writer->index_path_ = absl::StrCat(dir, "/", kShardIndexName);
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = nlohmann::ordered_json::object();
    for (size_t k = 0; k < shards.size(); ++k)
      for (const TensorLayout& t : shards[k])
        index["weight_map"][t.name] = ShardName(k, shards.size());
    writer->index_json_ = index.dump(2) + "\n";
  }
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string shard_path =
        shard_bytes > 0 ? absl::StrCat(dir, "/", ShardName(k, shards.size()))
                        : path;
    RETURN_IF_ERROR(writer->OpenFile({shard_path, shard_path + temp_suffix}));
    const File& file = writer->files_.back();
    const std::string header = SafetensorsHeaderBytes(shards[k]);
    RETURN_IF_ERROR(WriteAt(file.fd, file.temp,
                            reinterpret_cast<const uint8_t*>(header.data()),
                            header.size(), 0));
    uint64_t offset = header.size();
    for (TensorLayout& t : shards[k]) {
      const uint64_t bytes = t.bytes;
      writer->places_.push_back({std::move(t), k, offset});
      offset += bytes;
    }
  }
  absl::MutexLock lock(&writer->mu_);
  writer->written_.assign(writer->places_.size(), false);
  return writer;
}

absl::Status CheckpointStreamWriter::OpenFile(File file) {
  file.fd =
      ::open(file.temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (file.fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(file.temp, ": cannot create: ", std::strerror(errno)));
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

CheckpointStreamWriter::~CheckpointStreamWriter() {
  absl::MutexLock lock(&mu_);
  for (File& file : files_) {
    if (file.fd >= 0) ::close(file.fd);
    if (!committed_) ::unlink(file.temp.c_str());
  }
}

absl::Status CheckpointStreamWriter::Write(const Tensor& tensor) {
  return Write(tensor.name, tensor.dtype, tensor.shape, tensor.data);
}

absl::Status CheckpointStreamWriter::Write(const std::string& name, DType dtype,
                                           const std::vector<int64_t>& shape,
                                           absl::Span<const uint8_t> data) {
  return WriteInParts(name, dtype, shape, data.size(),
                      [&](uint64_t offset) { return data.subspan(offset); });
}

absl::StatusOr<CheckpointStreamWriter::Appender> CheckpointStreamWriter::Begin(
    const std::string& name, DType dtype, const std::vector<int64_t>& shape,
    uint64_t bytes) {
  const auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::DataLossError(
        absl::StrCat("tensor '", name, "' is not in the output's header"));
  }
  const Place& place = places_[it->second];
  if (dtype != place.layout.dtype || shape != place.layout.shape ||
      bytes != place.layout.bytes) {
    return absl::DataLossError(
        absl::StrCat("tensor '", name, "': decoded as ", DTypeName(dtype),
                     " of ", bytes, " bytes, not as the version describes it"));
  }
  return Appender(this, it->second);
}

absl::Status CheckpointStreamWriter::Appender::Append(
    absl::Span<const uint8_t> data) {
  const Place& place = writer_->places_[place_];
  if (data.size() > place.layout.bytes - offset_) {
    return absl::InternalError(
        absl::StrCat("tensor '", place.layout.name, "': parts do not add up"));
  }
  const File& file = writer_->files_[place.file];
  RETURN_IF_ERROR(WriteAt(file.fd, file.temp, data.data(), data.size(),
                          place.offset + offset_));
  if (writer_->archive_) crc_ = Crc32(crc_, data.data(), data.size());
  offset_ += data.size();
  return absl::OkStatus();
}

absl::Status CheckpointStreamWriter::Appender::Finish() {
  const Place& place = writer_->places_[place_];
  if (offset_ != place.layout.bytes) {
    return absl::InternalError(
        absl::StrCat("tensor '", place.layout.name, "': parts do not add up"));
  }
  absl::MutexLock lock(&writer_->mu_);
  writer_->written_[place_] = true;
  if (writer_->archive_) writer_->crcs_[place_] = crc_;
  return absl::OkStatus();
}

absl::Status CheckpointStreamWriter::WriteInParts(
    const std::string& name, DType dtype, const std::vector<int64_t>& shape,
    uint64_t bytes,
    const std::function<absl::Span<const uint8_t>(uint64_t offset)>& part) {
  ASSIGN_OR_RETURN(Appender appender, Begin(name, dtype, shape, bytes));
  for (uint64_t offset = 0; offset < bytes;) {
    const absl::Span<const uint8_t> data = part(offset);
    if (data.empty()) {
      return absl::InternalError(
          absl::StrCat("tensor '", name, "': parts do not add up"));
    }
    RETURN_IF_ERROR(appender.Append(data));
    offset += data.size();
  }
  return appender.Finish();
}

absl::Status CheckpointStreamWriter::Commit() {
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < places_.size(); ++i) {
    if (!written_[i]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tensor '", places_[i].layout.name, "' was never written"));
    }
  }
  if (archive_) {
    const File& file = files_.front();
    for (const FilePiece& piece : archive_->Finish(crcs_)) {
      RETURN_IF_ERROR(
          WriteAt(file.fd, file.temp,
                  reinterpret_cast<const uint8_t*>(piece.bytes.data()),
                  piece.bytes.size(), piece.offset));
    }
  }
  for (File& file : files_) {
    const bool synced = ::fsync(file.fd) == 0;
    const bool closed = ::close(file.fd) == 0;
    file.fd = -1;
    if (!synced || !closed ||
        std::rename(file.temp.c_str(), file.path.c_str()) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          file.path, ": could not be completed: ", std::strerror(errno)));
    }
  }
  committed_ = true;
  if (!index_path_.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(
        index_path_, absl::MakeConstSpan(
                         reinterpret_cast<const uint8_t*>(index_json_.data()),
                         index_json_.size())));
  }
  return absl::OkStatus();
}

}  // namespace weightcast
