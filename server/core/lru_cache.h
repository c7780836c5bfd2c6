// Values kept by key within a byte budget, the least recently used dropped
// first: the float models' outputs on their evaluation bundles (so that each
// tier's measurement need not run the float checkpoint again) and the layers
// an accuracy search decoded (so that the version's next candidates and
// searches need not encode them again). Thread-safe.
#ifndef WEIGHTCAST_SERVER_CORE_LRU_CACHE_H_
#define WEIGHTCAST_SERVER_CORE_LRU_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

template <typename Value>
class LruCache {
 public:
  explicit LruCache(uint64_t budget_bytes) : budget_(budget_bytes) {}

  // The value kept under `key` (now the most recently used), or null.
  std::shared_ptr<const Value> Get(const std::string& key) {
    absl::MutexLock lock(&mu_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) return nullptr;
    entries_.splice(entries_.begin(), entries_, it->second);
    return it->second->value;
  }

  // Keeps `value` (`bytes` of it) under `key`, in place of what was there,
  // dropping the least recently used to stay within the budget; a null value
  // and one larger than the whole budget are not kept.
  void Put(const std::string& key, std::shared_ptr<const Value> value,
           uint64_t bytes) {
    if (value == nullptr || bytes > budget_) return;
    absl::MutexLock lock(&mu_);
    if (auto it = by_key_.find(key); it != by_key_.end()) Drop(it->second);
    bytes_ += bytes;
    entries_.push_front({key, std::move(value), bytes});
    by_key_[key] = entries_.begin();
    while (bytes_ > budget_) Drop(std::prev(entries_.end()));
  }

  // Drops every value whose key starts with `prefix`.
  void ErasePrefix(absl::string_view prefix) {
    absl::MutexLock lock(&mu_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto next = std::next(it);
      if (absl::StartsWith(it->key, prefix)) Drop(it);
      it = next;
    }
  }

  uint64_t bytes() const {
    absl::MutexLock lock(&mu_);
    return bytes_;
  }
  uint64_t budget_bytes() const { return budget_; }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const Value> value;
    uint64_t bytes = 0;
  };
  using Iterator = typename std::list<Entry>::iterator;

  void Drop(Iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    bytes_ -= it->bytes;
    by_key_.erase(it->key);
    entries_.erase(it);
  }

  const uint64_t budget_;
  mutable absl::Mutex mu_;
  std::list<Entry> entries_ ABSL_GUARDED_BY(mu_);  // most recently used first
  absl::flat_hash_map<std::string, Iterator> by_key_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_LRU_CACHE_H_
