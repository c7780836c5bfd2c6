// Caps the concurrent streaming calls (Pull, Watch) of one client: a client is its bearer
// token when it sends one, else its IP address (the port differs per connection). Thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_
#define WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

class StreamLimiter {
 public:
  explicit StreamLimiter(int max_per_client) : max_per_client_(max_per_client) {}

  // A slot held until the returned handle is dropped; null with `*refused` set to
  // RESOURCE_EXHAUSTED when the client already holds max_per_client.
  std::shared_ptr<void> Acquire(const grpc::ServerContext& context, grpc::Status* refused);

 private:
  struct Table {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, int> open ABSL_GUARDED_BY(mu);
  };
  const int max_per_client_;
  const std::shared_ptr<Table> table_ = std::make_shared<Table>();
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_
