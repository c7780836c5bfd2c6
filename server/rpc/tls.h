// The server's transport credentials from PEM files: plaintext, TLS, or mutual
// TLS. Pure; thread-safe.
#ifndef WEIGHTCAST_SERVER_RPC_TLS_H_
#define WEIGHTCAST_SERVER_RPC_TLS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace weightcast {

// Insecure credentials when `cert` and `key` are both empty; TLS with that
// certificate chain and key otherwise; with `client_ca` also set, clients must
// present a certificate signed by it. INVALID_ARGUMENT naming the file that
// cannot be read or the one that is missing.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
ServerCredentialsFromFiles(const std::string& cert, const std::string& key,
                           const std::string& client_ca);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_TLS_H_
