#include "server/rpc/tls.h"

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"

namespace weightcast {
namespace {

absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path) {
  auto bytes = ReadFileBytes(path);
  if (!bytes.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", bytes.status().message()));
  return std::string(bytes->begin(), bytes->end());
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
ServerCredentialsFromFiles(const std::string& cert, const std::string& key,
                           const std::string& client_ca) {
  if (cert.empty() && key.empty()) {
    if (!client_ca.empty())
      return absl::InvalidArgumentError(
          "--tls-client-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key must both name readable PEM files");
  }
  grpc::SslServerCredentialsOptions ssl;
  auto cert_pem = ReadPem("--tls-cert", cert);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadPem("--tls-key", key);
  if (!key_pem.ok()) return key_pem.status();
  ssl.pem_key_cert_pairs.push_back({*std::move(key_pem), *std::move(cert_pem)});
  if (!client_ca.empty()) {
    auto ca_pem = ReadPem("--tls-client-ca", client_ca);
    if (!ca_pem.ok()) return ca_pem.status();
    ssl.pem_root_certs = *std::move(ca_pem);
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace weightcast
