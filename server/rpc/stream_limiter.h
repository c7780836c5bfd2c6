// Caps the concurrent streaming calls (Pull, Watch, health Watch) of one
// client. A client is a verified identity: its bearer token when the server
// checks tokens (the call has passed TokenAuth::Check before it asks for a
// slot), else its IP address (the port differs per connection); a header the
// server does not verify never makes a new client. Thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_
#define WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

class StreamLimiter {
 public:
  // `tokens_checked`: the server verifies bearer tokens, so a client is its
  // token.
  StreamLimiter(int max_per_client, bool tokens_checked)
      : max_per_client_(max_per_client), tokens_checked_(tokens_checked) {}

  struct Table {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, int> open ABSL_GUARDED_BY(mu);
  };
  // One open stream of one client; gives its place back when destroyed.
  class Slot {
   public:
    Slot(std::shared_ptr<Table> table, std::string key)
        : table_(std::move(table)), key_(std::move(key)) {}
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    const std::shared_ptr<Table> table_;
    const std::string key_;
  };

  // A slot held for the stream's life; null with `*refused` set to
  // RESOURCE_EXHAUSTED when the client already holds max_per_client.
  std::unique_ptr<Slot> Acquire(const grpc::ServerContextBase& context,
                                grpc::Status* refused);
  // The same for a call of `authorization` (its "authorization" metadata;
  // nullopt: none) from `peer` (ServerContext::peer(): "ipv4:127.0.0.1:5555",
  // "ipv6:[::1]:5555").
  std::unique_ptr<Slot> Acquire(std::optional<absl::string_view> authorization,
                                absl::string_view peer, grpc::Status* refused);

 private:
  const int max_per_client_;
  const bool tokens_checked_;
  const std::shared_ptr<Table> table_ = std::make_shared<Table>();
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_STREAM_LIMITER_H_
