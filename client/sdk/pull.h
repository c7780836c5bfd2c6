// The pull state machine: open Distribution.Pull, receive the manifest and the
// layers' chunks, hand complete layers to a DecodePool, resume from (layer,
// offset) after a dropped stream, refetch a layer that fails verification,
// hand over the coarse model of a progressive pull, fall back from damaged
// held bases, and write the output. Internal to client/sdk. A call is
// independent of others; the stubs are gRPC's (thread-safe).
#ifndef WEIGHTCAST_CLIENT_SDK_PULL_H_
#define WEIGHTCAST_CLIENT_SDK_PULL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>

#include "absl/status/statusor.h"
#include "client/sdk/client.h"
#include "client/sdk/fleet_calls.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {

struct PullStubs {
  v1::Distribution::Stub* distribution;  // must outlive the pull
  // For paced pulls (PullOptions::max_bytes_per_second): a channel with a
  // small fixed receive window.
  v1::Distribution::Stub* paced_distribution;
  fleet_calls::Prepare prepare;  // deadline and credentials of each call
  // The Authorization header of blob GETs over HTTP ("Bearer TOKEN"; empty:
  // none).
  std::string http_authorization;
};

// Pulls `options.model` at the version `info` describes (the caller has
// described it), choosing the tier from `info`. `start`: when the pull began
// (PullResult::seconds and progress count from it).
absl::StatusOr<PullResult> RunPull(const PullStubs& stubs,
                                   const ModelInfo& info,
                                   const PullOptions& options,
                                   std::chrono::steady_clock::time_point start);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_PULL_H_
