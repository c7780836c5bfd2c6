// Bearer-token authorization for the gRPC services. Tokens are never stored:
// the tokens file holds their SHA-256, one per line as "ROLE HEX [NAME]
// [devices=ID,...]" (ROLE admin or device;
// '#' starts a comment; `weightcastd --hash-token TOKEN` prints a token's
// line). A call carries "authorization: Bearer TOKEN". Admin tokens may call
// everything; device tokens the calls a device or application makes (manifest,
// pull, watch, status reports, and listing and describing models, which tier
// selection reads), and watch and report only as the device ids of their
// devices= list (an ID ending in '*' is a prefix). Thread-safe after Load.
#ifndef WEIGHTCAST_SERVER_RPC_AUTH_H_
#define WEIGHTCAST_SERVER_RPC_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace weightcast {

enum class Role { kDevice = 1, kAdmin = 2 };

// Hex SHA-256 of a token: what the tokens file holds.
std::string TokenHash(absl::string_view token);

class TokenAuth {
 public:
  // INVALID_ARGUMENT naming the file and line for a malformed line; an empty
  // file is an error too.
  static absl::StatusOr<std::unique_ptr<TokenAuth>> Load(
      const std::string& path);

  // OK when the call's token has at least `needed`; UNAUTHENTICATED without a
  // known token; PERMISSION_DENIED for a device token on an admin call.
  grpc::Status Check(const grpc::ServerContextBase& context, Role needed) const;
  // After Check: OK when the call's token is an admin token or a device token
  // issued for `device_id`; PERMISSION_DENIED otherwise.
  grpc::Status CheckDevice(const grpc::ServerContextBase& context,
                           absl::string_view device_id) const;
  // After Check: the role of the call's token.
  Role RoleOf(const grpc::ServerContextBase& context) const;
  // Whether an HTTP Authorization header value ("Bearer TOKEN") carries a
  // known token of either role (weightcastd --blob-tokens: blob GETs).
  bool Knows(absl::string_view authorization) const;

 private:
  struct Grant {
    Role role;
    std::vector<std::string>
        devices;  // device tokens: ids, or prefixes ending in '*'
  };
  const Grant* Find(const grpc::ServerContextBase& context) const;

  absl::flat_hash_map<std::string, Grant>
      grants_;  // hex SHA-256 -> what the token may do
};

// The services' checks: OK when `auth` is null (tokens off: every caller is an
// operator).
inline grpc::Status Allow(const TokenAuth* auth,
                          const grpc::ServerContextBase* context, Role needed) {
  return auth == nullptr ? grpc::Status::OK : auth->Check(*context, needed);
}
inline grpc::Status AllowDevice(const TokenAuth* auth,
                                const grpc::ServerContextBase* context,
                                absl::string_view device_id) {
  return auth == nullptr ? grpc::Status::OK
                         : auth->CheckDevice(*context, device_id);
}
inline Role RoleOf(const TokenAuth* auth,
                   const grpc::ServerContextBase* context) {
  return auth == nullptr ? Role::kAdmin : auth->RoleOf(*context);
}

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_AUTH_H_
