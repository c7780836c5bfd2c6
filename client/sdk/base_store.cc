#include "client/sdk/base_store.h"

#include <algorithm>
#include <filesystem>

#include "common/base/file.h"

namespace weightcast {
namespace {

constexpr char kSuffix[] = ".wcl";

bool IsHexSha(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

BaseStore::BaseStore(std::string dir) : dir_(std::move(dir)) {
  if (dir_.empty()) return;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    const std::string stem =
        name.size() > 4 ? name.substr(0, name.size() - 4) : "";
    if (name.size() == 68 && name.substr(64) == kSuffix && IsHexSha(stem))
      held_.push_back(stem);
  }
  std::sort(held_.begin(), held_.end());
}

std::string BaseStore::PathOf(const std::string& hex) const {
  return dir_ + "/" + hex + kSuffix;
}

std::vector<std::string> BaseStore::HeldRaw() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> raw;
  for (const std::string& hex : held_) raw.push_back(HexToRawDigest(hex));
  return raw;
}

void BaseStore::Forget() {
  absl::MutexLock lock(&mu_);
  held_.clear();
}

void BaseStore::Keep(const Sha256Digest& sha256,
                     absl::Span<const uint8_t> bytes) {
  const std::string hex = DigestToHex(sha256);
  if (!dir_.empty()) {
    std::error_code error;
    std::filesystem::create_directories(dir_, error);
    WriteFileAtomically(PathOf(hex), bytes)
        .IgnoreError();  // kept in memory regardless
  }
  absl::MutexLock lock(&mu_);
  received_[hex].assign(bytes.begin(), bytes.end());
  needed_.push_back(hex);
}

void BaseStore::Store(absl::Span<const uint8_t> bytes) {
  if (dir_.empty()) return;
  const std::string hex = DigestToHex(Sha256(bytes));
  std::error_code error;
  std::filesystem::create_directories(dir_, error);
  if (!WriteFileAtomically(PathOf(hex), bytes).ok())
    return;  // an optimization only
  absl::MutexLock lock(&mu_);
  needed_.push_back(hex);
}

std::vector<std::string> BaseStore::Needed() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out = needed_;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<std::vector<uint8_t>> BaseStore::Get(
    const Sha256Digest& sha256) {
  const std::string hex = DigestToHex(sha256);
  absl::MutexLock lock(&mu_);
  auto it = received_.find(hex);
  if (it != received_.end()) return it->second;
  if (std::find(held_.begin(), held_.end(), hex) == held_.end()) {
    return absl::NotFoundError("base layer " + hex + " is not held");
  }
  needed_.push_back(hex);
  return ReadFileBytes(PathOf(hex));
}

void BaseStore::DiscardDamaged() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> intact;
  for (const std::string& hex : held_) {
    auto bytes = ReadFileBytes(PathOf(hex));
    if (bytes.ok() && DigestToHex(Sha256(*bytes)) == hex) {
      intact.push_back(hex);
    } else {
      std::error_code error;
      std::filesystem::remove(PathOf(hex), error);
    }
  }
  held_ = std::move(intact);
}

void BaseStore::Prune(const std::vector<std::string>& keep) {
  if (dir_.empty()) return;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 68 || name.substr(64) != kSuffix) continue;
    if (std::find(keep.begin(), keep.end(), name.substr(0, 64)) == keep.end()) {
      std::filesystem::remove(entry.path(), error);
    }
  }
  absl::MutexLock lock(&mu_);
  held_.erase(std::remove_if(held_.begin(), held_.end(),
                             [&](const std::string& hex) {
                               return std::find(keep.begin(), keep.end(),
                                                hex) == keep.end();
                             }),
              held_.end());
}

}  // namespace weightcast
