// Replicas sharing a PostgreSQL registry encode each tier once: before
// encoding, a replica takes the tier's lease (a row with its name and an
// expiry, registry.h); while it encodes, a thread here renews all its leases
// every third of the timeout; done, it releases the lease. A replica that dies
// stops renewing, and once its lease expires another replica takes it over
// and encodes the tier. Expiry times come from each replica's clock: replicas'
// clocks must agree to well within the timeout (NTP does). Thread-safe.
#ifndef WEIGHTCAST_SERVER_CORE_TIER_LEASES_H_
#define WEIGHTCAST_SERVER_CORE_TIER_LEASES_H_

#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/storage/registry.h"

namespace weightcast {

class TierLeases {
 public:
  // `registry` must outlive this; `timeout` is how long a lease outlives its
  // holder's last renewal.
  TierLeases(Registry* registry, absl::Duration timeout);
  ~TierLeases();  // stops renewing (the leases then expire)

  // true: this replica holds the lease now; false: another replica does.
  absl::StatusOr<bool> TryAcquire(int64_t version_id, const std::string& tier);
  void Release(int64_t version_id, const std::string& tier);

  const std::string& holder() const { return holder_; }

 private:
  void Renew();

  Registry* const registry_;
  const absl::Duration timeout_;
  const std::string holder_;  // host:pid:random
  absl::Mutex mu_;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread renewer_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_TIER_LEASES_H_
