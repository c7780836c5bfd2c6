// The float models' outputs on their versions' evaluation bundles, kept so
// that each tier's measurement and each cos-C search need not read the stored
// float checkpoint and run it again. Keyed by content (checkpoint and bundle
// digests); the least recently used go first when the kept values pass a byte
// budget. Thread-safe.
#ifndef WEIGHTCAST_SERVER_CORE_REFERENCE_CACHE_H_
#define WEIGHTCAST_SERVER_CORE_REFERENCE_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/eval/evaluator.h"

namespace weightcast {

class ReferenceCache {
 public:
  explicit ReferenceCache(uint64_t budget_bytes) : budget_(budget_bytes) {}

  // The key of a float checkpoint's outputs on a bundle, by their digests.
  static std::string Key(const std::string& checkpoint_sha256,
                         const std::string& module_sha256,
                         const std::string& data_sha256) {
    return checkpoint_sha256 + "/" + module_sha256 + "/" + data_sha256;
  }

  // The outputs kept under `key` (now the most recently used), or null.
  std::shared_ptr<const ReferenceOutputs> Get(const std::string& key);
  // Keeps `outputs` under `key`, dropping the least recently used to stay
  // within the budget; no outputs (null or 0 rows) and outputs larger than the
  // whole budget are not kept.
  void Put(const std::string& key,
           std::shared_ptr<const ReferenceOutputs> outputs);
  uint64_t bytes() const;
  uint64_t budget_bytes() const { return budget_; }

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const ReferenceOutputs>>;
  const uint64_t budget_;
  mutable absl::Mutex mu_;
  std::list<Entry> entries_ ABSL_GUARDED_BY(mu_);  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> by_key_
      ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_REFERENCE_CACHE_H_
