#include "server/rpc/stream_limiter.h"

#include "absl/strings/str_cat.h"
#include "server/rpc/auth.h"

namespace weightcast {
namespace {

std::string ClientKey(std::optional<absl::string_view> authorization,
                      absl::string_view peer, bool tokens_checked) {
  if (tokens_checked && authorization)
    return "token:" + TokenHash(*authorization);
  return absl::StrCat(
      "peer:",
      peer.substr(0, peer.rfind(':')));  // the port differs per connection
}

}  // namespace

StreamLimiter::Slot::~Slot() {
  absl::MutexLock lock(&table_->mu);
  if (--table_->open[key_] == 0) table_->open.erase(key_);
}

std::unique_ptr<StreamLimiter::Slot> StreamLimiter::Acquire(
    const grpc::ServerContextBase& context, grpc::Status* refused) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  std::optional<absl::string_view> authorization;
  if (it != metadata.end())
    authorization = absl::string_view(it->second.data(), it->second.size());
  return Acquire(authorization, context.peer(), refused);
}

std::unique_ptr<StreamLimiter::Slot> StreamLimiter::Acquire(
    std::optional<absl::string_view> authorization, absl::string_view peer,
    grpc::Status* refused) {
  const std::string key = ClientKey(authorization, peer, tokens_checked_);
  {
    absl::MutexLock lock(&table_->mu);
    int& open = table_->open[key];
    if (open >= max_per_client_) {
      *refused = grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("this client already has ", open,
                       " streams open (the server allows ", max_per_client_,
                       " per client: --max-streams-per-client)"));
      return nullptr;
    }
    ++open;
  }
  return std::make_unique<Slot>(table_, key);
}

}  // namespace weightcast
