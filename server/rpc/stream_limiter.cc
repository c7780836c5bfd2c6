#include "server/rpc/stream_limiter.h"

#include "absl/strings/str_cat.h"
#include "server/rpc/auth.h"

namespace weightcast {
namespace {

std::string ClientKey(const grpc::ServerContext& context, bool tokens_checked) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (tokens_checked && it != metadata.end()) {
    return "token:" + TokenHash(std::string(it->second.data(), it->second.size()));
  }
  const std::string peer = context.peer();  // "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555"
  return "peer:" + peer.substr(0, peer.rfind(':'));
}

}  // namespace

StreamLimiter::Slot::~Slot() {
  absl::MutexLock lock(&table_->mu);
  if (--table_->open[key_] == 0) table_->open.erase(key_);
}

std::unique_ptr<StreamLimiter::Slot> StreamLimiter::Acquire(const grpc::ServerContext& context, grpc::Status* refused) {
  const std::string key = ClientKey(context, tokens_checked_);
  {
    absl::MutexLock lock(&table_->mu);
    int& open = table_->open[key];
    if (open >= max_per_client_) {
      *refused = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              absl::StrCat("this client already has ", open, " streams open (the server allows ",
                                           max_per_client_, " per client: --max-streams-per-client)"));
      return nullptr;
    }
    ++open;
  }
  return std::make_unique<Slot>(table_, key);
}

}  // namespace weightcast
