// The Client over gRPC: each call converts its request, calls the Admin or
// Distribution stub and converts the answer and the status; Pull runs the
// pull state machine (pull.h), the fleet calls are fleet_calls.h's. Internal to
// client/sdk; Client::Connect (connect.cc) makes the channels.
#ifndef WEIGHTCAST_CLIENT_SDK_GRPC_CLIENT_H_
#define WEIGHTCAST_CLIENT_SDK_GRPC_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "client/sdk/client.h"

namespace weightcast {

// `paced_channel`: the channel paced pulls use (a small fixed receive window).
std::unique_ptr<Client> NewGrpcClient(
    const ConnectOptions& options, std::shared_ptr<grpc::Channel> channel,
    std::shared_ptr<grpc::Channel> paced_channel);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_GRPC_CLIENT_H_
