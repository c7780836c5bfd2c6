#include "server/rpc/auth.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/sha256.h"

namespace weightcast {

std::string TokenHash(absl::string_view token) {
  return DigestToHex(Sha256(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(token.data()), token.size())));
}

absl::StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the tokens file"));
  auto auth = std::unique_ptr<TokenAuth>(new TokenAuth());
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string uncommented = line.substr(0, line.find('#'));
    const absl::string_view text = absl::StripAsciiWhitespace(uncommented);
    if (text.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(text, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const bool hex = fields.size() >= 2 && fields[1].size() == 64 &&
                     fields[1].find_first_not_of("0123456789abcdef") == absl::string_view::npos;
    if (fields.size() < 2 || (fields[0] != "admin" && fields[0] != "device") || !hex) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number,
                                                     ": expected \"admin|device SHA256-HEX [name]\" (lowercase hex)"));
    }
    auth->roles_[std::string(fields[1])] = fields[0] == "admin" ? Role::kAdmin : Role::kDevice;
  }
  if (auth->roles_.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  return auth;
}

grpc::Status TokenAuth::Check(const grpc::ServerContext& context, Role needed) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "this server requires a bearer token (authorization metadata)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ")) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization must be \"Bearer TOKEN\"");
  }
  auto role = roles_.find(TokenHash(value.substr(7)));
  if (role == roles_.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  if (static_cast<int>(role->second) < static_cast<int>(needed)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "a device token cannot call the admin API");
  }
  return grpc::Status::OK;
}

}  // namespace weightcast
