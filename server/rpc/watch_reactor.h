// Distribution.Watch on gRPC's callback API: a stream is a WatchReactor, not a
// thread. The Fleet wakes it (SubscriptionListener) when its Subscription has
// an event; it writes one event at a time (the next write starts from
// OnWriteDone), and a keepalive when the interval passes with nothing sent.
// One WatchKeepalive thread serves the keepalives of every stream. Reactors
// are held by shared_ptr: gRPC's reference ends at OnDone, a waker's when it
// returns, so a wake racing with the end of a stream finds it finished, never
// freed. Thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_WATCH_REACTOR_H_
#define WEIGHTCAST_SERVER_RPC_WATCH_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics/metrics.h"
#include "server/push/fleet.h"
#include "server/rpc/stream_limiter.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

class WatchReactor;

// Sends each open Watch stream a keepalive once `interval` passes without a
// write, from one thread that looks at every stream a few times per interval.
class WatchKeepalive {
 public:
  explicit WatchKeepalive(absl::Duration interval);
  ~WatchKeepalive();  // joins the thread
  WatchKeepalive(const WatchKeepalive&) = delete;
  WatchKeepalive& operator=(const WatchKeepalive&) = delete;

  absl::Duration interval() const { return interval_; }
  void Add(const std::shared_ptr<WatchReactor>& reactor);
  void Remove(WatchReactor* reactor);

 private:
  void Run();

  const absl::Duration interval_;
  absl::Mutex mu_;
  absl::flat_hash_map<WatchReactor*, std::weak_ptr<WatchReactor>> reactors_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::WatchEvent>,
                           public SubscriptionListener,
                           public std::enable_shared_from_this<WatchReactor> {
 public:
  // A stream that ends at once with `status` (a refused Watch).
  static grpc::ServerWriteReactor<v1::WatchEvent>* Refuse(grpc::Status status);
  // Subscribes `spec` and streams its events until the client goes or the
  // fleet shuts down (then UNAVAILABLE). `slot` is held until the stream ends.
  // The fleet, metrics and keepalive must outlive the stream.
  static grpc::ServerWriteReactor<v1::WatchEvent>* Start(
      Fleet* fleet, ServerMetrics* metrics, WatchKeepalive* keepalive,
      std::unique_ptr<StreamLimiter::Slot> slot, WatchSpec spec);

  // SubscriptionListener: an event is queued, or the subscription closed.
  void OnSubscriptionReady() override { Pump(); }
  // From WatchKeepalive: sends a keepalive if nothing was written since
  // `interval` before `now`.
  void KeepaliveIfIdle(absl::Time now, absl::Duration interval);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  WatchReactor(Fleet* fleet, ServerMetrics* metrics, WatchKeepalive* keepalive,
               std::unique_ptr<StreamLimiter::Slot> slot)
      : fleet_(fleet),
        metrics_(metrics),
        keepalive_(keepalive),
        slot_(std::move(slot)) {}
  // Starts the next write or the Finish, if one is due and no write is in
  // flight. Never holds mu_ while calling gRPC.
  void Pump();

  // Constant after construction (slot_ and self_ until OnDone, the last
  // reaction, resets them).
  Fleet* const fleet_;
  ServerMetrics* const metrics_;
  WatchKeepalive* const keepalive_;
  std::unique_ptr<StreamLimiter::Slot> slot_;
  std::shared_ptr<WatchReactor> self_;  // gRPC's reference

  absl::Mutex mu_;
  std::shared_ptr<Subscription> subscription_ ABSL_GUARDED_BY(mu_);
  v1::WatchEvent event_
      ABSL_GUARDED_BY(mu_);  // the write in flight (gRPC reads it until done)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool keepalive_due_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish was called
  absl::Time last_write_ ABSL_GUARDED_BY(mu_) = absl::Now();
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_WATCH_REACTOR_H_
