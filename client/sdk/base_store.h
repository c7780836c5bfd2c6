// The packed layers a client keeps for delta pulls: a directory of files named
// by the SHA-256 of their bytes (hex, ".wcl"). A pull tells the server which it
// holds, takes the delta layers that name one of them as their base, keeps the
// bases the server sends along, and afterwards stores its own HEVC layers as
// bases for the next version. A file is trusted only after its SHA-256 is
// checked (DecodeLayerDelta does). Thread-safe.
#ifndef WEIGHTCAST_CLIENT_SDK_BASE_STORE_H_
#define WEIGHTCAST_CLIENT_SDK_BASE_STORE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/base/sha256.h"

namespace weightcast {

class BaseStore {
 public:
  // `dir` empty: holds nothing, keeps received bases in memory only.
  explicit BaseStore(std::string dir);

  // The raw SHA-256 of every layer held, for the request (empty after
  // Forget()).
  std::vector<std::string> HeldRaw() const;
  // Stop offering held layers (the next request pulls whole layers).
  void Forget();

  // A base the server sent: kept for this pull and written to the directory.
  void Keep(const Sha256Digest& sha256, absl::Span<const uint8_t> bytes);
  // A pulled layer worth keeping as the base of a later version's delta.
  void Store(absl::Span<const uint8_t> bytes);
  // The bytes of a held or kept base (recorded as needed); NOT_FOUND when
  // neither.
  absl::StatusOr<std::vector<uint8_t>> Get(const Sha256Digest& sha256);
  // Deletes the held files whose bytes no longer match their name.
  void DiscardDamaged();
  // Deletes every held file except `keep` (hex SHA-256s): bases of versions no
  // longer installed.
  void Prune(const std::vector<std::string>& keep);
  // Hex SHA-256 of every layer Keep() or Store() wrote, or Get() returned,
  // since construction: what the version just pulled needs kept.
  std::vector<std::string> Needed() const;

 private:
  std::string PathOf(const std::string& hex) const;

  const std::string dir_;
  mutable absl::Mutex mu_;
  std::vector<std::string> held_ ABSL_GUARDED_BY(mu_);  // hex
  absl::flat_hash_map<std::string, std::vector<uint8_t>> received_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::string> needed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_BASE_STORE_H_
