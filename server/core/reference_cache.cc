#include "server/core/reference_cache.h"

namespace weightcast {
namespace {

uint64_t BytesOf(const ReferenceOutputs& outputs) {
  return outputs.values.size() * sizeof(float);
}

}  // namespace

std::shared_ptr<const ReferenceOutputs> ReferenceCache::Get(
    const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, it->second);
  return it->second->second;
}

void ReferenceCache::Put(const std::string& key,
                         std::shared_ptr<const ReferenceOutputs> outputs) {
  if (outputs == nullptr || outputs->rows == 0 || BytesOf(*outputs) > budget_)
    return;
  absl::MutexLock lock(&mu_);
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    bytes_ -= BytesOf(*it->second->second);
    entries_.erase(it->second);
    by_key_.erase(it);
  }
  bytes_ += BytesOf(*outputs);
  entries_.emplace_front(key, std::move(outputs));
  by_key_[key] = entries_.begin();
  while (bytes_ > budget_) {
    const Entry& oldest = entries_.back();
    bytes_ -= BytesOf(*oldest.second);
    by_key_.erase(oldest.first);
    entries_.pop_back();
  }
}

uint64_t ReferenceCache::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

}  // namespace weightcast
