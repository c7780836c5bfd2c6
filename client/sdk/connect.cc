#include <grpcpp/grpcpp.h>

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "client/sdk/grpc_client.h"

namespace weightcast {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const ConnectOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  // A new Client connects afresh: with gRPC's global subchannel pool it would
  // inherit the reconnect backoff of an earlier client's failed connection to
  // the same address, and fail fast with UNAVAILABLE although the server is up
  // again.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!options.tls_root_certs_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_cert_chain = options.tls_cert_chain_pem;
    ssl.pem_private_key = options.tls_private_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateCustomChannel(options.address, credentials, args);
  grpc::ChannelArguments paced = args;
  paced.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  paced.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  paced.SetInt("weightcast.paced",
               1);  // a distinct channel, not shared with the unpaced one
  auto paced_channel =
      grpc::CreateCustomChannel(options.address, credentials, paced);
  if (!channel || !paced_channel)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot make a channel to ", options.address));
  return NewGrpcClient(options, std::move(channel), std::move(paced_channel));
}

}  // namespace weightcast
