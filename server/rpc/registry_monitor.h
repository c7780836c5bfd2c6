// Watches a shared (PostgreSQL) registry: every `interval` it pings the
// database; while that fails the server reports NOT_SERVING on the health
// service and Admit() refuses new RPCs with UNAVAILABLE naming the registry
// (without its password), rather than answering from what it last knew. It
// needs no restart: the first ping that succeeds again (the database wrapper
// reconnects by itself) turns health back to SERVING. Not used with SQLite, a
// file that cannot go away under a running server. Thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_REGISTRY_MONITOR_H_
#define WEIGHTCAST_SERVER_RPC_REGISTRY_MONITOR_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/rpc/health_service.h"

namespace weightcast {

class RegistryMonitor {
 public:
  // `ping` must be safe to call from the monitor's thread; `health` must
  // outlive the monitor. Nothing happens until Start().
  RegistryMonitor(std::function<absl::Status()> ping, HealthService* health,
                  absl::Duration interval);
  ~RegistryMonitor();

  // Pings once, sets health SERVING or NOT_SERVING by the answer, then keeps
  // pinging every interval on a thread of its own.
  void Start();

  // Stops pinging and leaves health alone from now on (the drain on SIGTERM
  // owns it then).
  void Stop();

  // OK while the registry answers; UNAVAILABLE with its last error otherwise.
  grpc::Status Admit() const;
  bool reachable() const;

 private:
  void Check(bool first);
  void Loop();

  const std::function<absl::Status()> ping_;
  HealthService* const health_;
  const absl::Duration interval_;
  mutable absl::Mutex mu_;
  absl::Status last_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_REGISTRY_MONITOR_H_
