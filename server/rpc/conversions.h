// The edge between the core and gRPC: status codes and record <-> protobuf
// conversions. Pure functions; thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_CONVERSIONS_H_
#define WEIGHTCAST_SERVER_RPC_CONVERSIONS_H_

#include <grpcpp/grpcpp.h>

#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "server/core/model_store.h"
#include "server/push/fleet.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

// The message a client may see of a core error: its first line, server paths
// replaced by
// "<server path>" (a URL's "scheme://..." passes: redact secrets in it
// first), control characters by '?', cut to kMaxClientMessageBytes.
// What was withheld (later lines, paths) is marked; the whole message goes to
// the server log.
inline constexpr size_t kMaxClientMessageBytes = 1024;
std::string ClientMessage(absl::string_view message);
// The status a client gets (ClientMessage; absl and gRPC share the code
// numbers); logs the original message to stderr when it differs.
grpc::Status ToGrpcStatus(const absl::Status& status);

void ToProto(const VersionRecord& version, const std::vector<TierRecord>& tiers,
             v1::ModelVersion* out);
void ToProto(const Manifest& manifest, v1::Manifest* out);
void ToProto(const RolloutView& rollout, v1::Rollout* out);
v1::Assignment::Reason ToProto(AssignmentReason reason);
v1::LayerCodec ToProto(LayerCodec codec);

// The held_blob_sha256 of a request as hex blob names; INVALID_ARGUMENT for a
// malformed entry or more than kMaxHeldBlobs.
inline constexpr int kMaxHeldBlobs = 1 << 16;
absl::StatusOr<absl::flat_hash_set<std::string>> HeldBlobs(
    const google::protobuf::RepeatedPtrField<std::string>& raw);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_CONVERSIONS_H_
