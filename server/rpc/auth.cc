#include "server/rpc/auth.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/printable.h"
#include "common/base/sha256.h"

namespace weightcast {

std::string TokenHash(absl::string_view token) {
  return DigestToHex(Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(token.data()), token.size())));
}

absl::StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::Load(
    const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read the tokens file"));
  auto auth = std::unique_ptr<TokenAuth>(new TokenAuth());
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string uncommented = line.substr(0, line.find('#'));
    const absl::string_view text = absl::StripAsciiWhitespace(uncommented);
    if (text.empty()) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const bool hex = fields.size() >= 2 && fields[1].size() == 64 &&
                     fields[1].find_first_not_of("0123456789abcdef") ==
                         absl::string_view::npos;
    if (fields.size() < 2 || (fields[0] != "admin" && fields[0] != "device") ||
        !hex) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number,
                       ": expected \"admin|device SHA256-HEX [name] "
                       "[devices=ID,...]\" (lowercase hex)"));
    }
    Grant grant{fields[0] == "admin" ? Role::kAdmin : Role::kDevice, {}};
    for (size_t i = 2; i < fields.size(); ++i) {
      absl::string_view devices = fields[i];
      if (!absl::ConsumePrefix(&devices, "devices=")) continue;
      for (absl::string_view id :
           absl::StrSplit(devices, ',', absl::SkipEmpty()))
        grant.devices.emplace_back(id);
    }
    auth->grants_[std::string(fields[1])] = std::move(grant);
  }
  if (auth->grants_.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  return auth;
}

const TokenAuth::Grant* TokenAuth::Find(
    const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return nullptr;
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ")) return nullptr;
  auto grant = grants_.find(TokenHash(value.substr(7)));
  return grant == grants_.end() ? nullptr : &grant->second;
}

bool TokenAuth::Knows(absl::string_view authorization) const {
  return absl::ConsumePrefix(&authorization, "Bearer ") &&
         grants_.contains(TokenHash(authorization));
}

Role TokenAuth::RoleOf(const grpc::ServerContextBase& context) const {
  const Grant* grant = Find(context);
  return grant ? grant->role : Role::kDevice;
}

grpc::Status TokenAuth::CheckDevice(const grpc::ServerContextBase& context,
                                    absl::string_view device_id) const {
  const Grant* grant = Find(context);
  if (grant && grant->role == Role::kAdmin) return grpc::Status::OK;
  if (grant) {
    for (const std::string& id : grant->devices) {
      const bool prefix = absl::EndsWith(id, "*");
      if (prefix ? absl::StartsWith(device_id, absl::string_view(id).substr(
                                                   0, id.size() - 1))
                 : device_id == id) {
        return grpc::Status::OK;
      }
    }
  }
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      absl::StrCat("this token is not issued for device ", Echo(device_id),
                   " (devices= in the server's tokens file)"));
}

grpc::Status TokenAuth::Check(const grpc::ServerContextBase& context,
                              Role needed) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        "this server requires a bearer token (authorization metadata)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ")) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization must be \"Bearer TOKEN\"");
  }
  const Grant* grant = Find(context);
  if (grant == nullptr)
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  if (static_cast<int>(grant->role) < static_cast<int>(needed)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "a device token cannot call the admin API");
  }
  return grpc::Status::OK;
}

}  // namespace weightcast
