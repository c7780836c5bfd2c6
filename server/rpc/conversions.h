// The edge between the core and gRPC: status codes and record <-> protobuf conversions.
// Pure functions; thread-safe.
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

grpc::Status ToGrpcStatus(const absl::Status& status);

void ToProto(const VersionRecord& version, const std::vector<TierRecord>& tiers, v1::ModelVersion* out);
void ToProto(const Manifest& manifest, v1::Manifest* out);
void ToProto(const RolloutView& rollout, v1::Rollout* out);

// The held_blob_sha256 of a request as hex blob names; INVALID_ARGUMENT for a malformed entry or
// more than kMaxHeldBlobs.
inline constexpr int kMaxHeldBlobs = 1 << 16;
absl::StatusOr<absl::flat_hash_set<std::string>> HeldBlobs(const google::protobuf::RepeatedPtrField<std::string>& raw);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_CONVERSIONS_H_
