// TokenAuth without a server: a tokens file in a fresh directory, and
// ServerContexts whose "authorization" metadata gRPC's test spouse sets.
#include "server/rpc/auth.h"

#include <grpcpp/test/server_context_test_spouse.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/grpc_status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// In a directory of the test's own: ctest runs the fixture's tests in
// parallel processes.
std::string WriteTokens(const std::string& name, const std::string& text) {
  const std::string path =
      FreshDir(absl::StrCat(
          "auth_", name, "_",
          ::testing::UnitTest::GetInstance()->current_test_info()->name())) +
      "/tokens";
  std::ofstream(path) << text;
  return path;
}

// A call's context carrying `authorization` (none when nullopt).
class Call {
 public:
  explicit Call(std::optional<std::string> authorization) : spouse_(&context_) {
    if (authorization)
      spouse_.AddClientMetadata("authorization", *authorization);
  }
  const grpc::ServerContext& context() const { return context_; }

 private:
  grpc::ServerContext context_;
  grpc::testing::ServerContextTestSpouse spouse_;
};

class TokenAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path =
        WriteTokens("roles",
                    "# operators\n"
                    "admin " +
                        TokenHash("admin-secret") +
                        " ops\n"
                        "\n"
                        "device\t" +
                        TokenHash("fleet-secret") +
                        " fleet devices=dev-*,lab-7  # the fleet\n"
                        "device " +
                        TokenHash("app-secret") + " app\n");
    auto auth = TokenAuth::Load(path);
    ASSERT_THAT(auth, IsOk());
    auth_ = *std::move(auth);
  }
  std::unique_ptr<TokenAuth> auth_;
};

TEST(TokenHash, IsTheHexSha256OfTheToken) {
  EXPECT_EQ(TokenHash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(TokenAuthTest, AnAdminTokenMayCallEverything) {
  const Call call("Bearer admin-secret");
  EXPECT_THAT(auth_->Check(call.context(), Role::kAdmin), IsOk());
  EXPECT_THAT(auth_->Check(call.context(), Role::kDevice), IsOk());
  EXPECT_THAT(auth_->CheckDevice(call.context(), "any-device"), IsOk());
  EXPECT_EQ(auth_->RoleOf(call.context()), Role::kAdmin);
}

TEST_F(TokenAuthTest, ADeviceTokenMayNotCallTheAdminApi) {
  const Call call("Bearer app-secret");
  EXPECT_THAT(auth_->Check(call.context(), Role::kDevice), IsOk());
  EXPECT_THAT(auth_->Check(call.context(), Role::kAdmin),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       "a device token cannot call the admin API"));
  EXPECT_EQ(auth_->RoleOf(call.context()), Role::kDevice);
}

TEST_F(TokenAuthTest, ACallWithoutAKnownBearerTokenIsUnauthenticated) {
  EXPECT_THAT(auth_->Check(Call(std::nullopt).context(), Role::kDevice),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       HasSubstr("requires a bearer token")));
  EXPECT_THAT(auth_->Check(Call("Basic admin-secret").context(), Role::kDevice),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "authorization must be \"Bearer TOKEN\""));
  EXPECT_THAT(auth_->Check(Call("admin-secret").context(), Role::kDevice),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "authorization must be \"Bearer TOKEN\""));
  EXPECT_THAT(
      auth_->Check(Call("Bearer admin-secret2").context(), Role::kDevice),
      StatusIs(absl::StatusCode::kUnauthenticated, "unknown token"));
  EXPECT_THAT(
      auth_->Check(Call("Bearer " + TokenHash("admin-secret")).context(),
                   Role::kDevice),
      StatusIs(absl::StatusCode::kUnauthenticated,
               "unknown token"));  // the hash is not the token
  EXPECT_EQ(auth_->RoleOf(Call("Bearer nobody").context()), Role::kDevice);
}

TEST_F(TokenAuthTest, ADeviceTokenActsOnlyForTheDevicesItIsIssuedFor) {
  const Call fleet("Bearer fleet-secret");
  EXPECT_THAT(auth_->CheckDevice(fleet.context(), "dev-1"), IsOk());
  EXPECT_THAT(auth_->CheckDevice(fleet.context(), "dev-"),
              IsOk());  // the prefix itself
  EXPECT_THAT(auth_->CheckDevice(fleet.context(), "lab-7"), IsOk());
  EXPECT_THAT(
      auth_->CheckDevice(fleet.context(),
                         "lab-70"),  // lab-7 is an exact id, not a prefix
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr("not issued for device 'lab-70'")));
  EXPECT_THAT(auth_->CheckDevice(fleet.context(), "xdev-1"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(auth_->CheckDevice(fleet.context(), "dev"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  // A device token without devices= acts for none; an unknown token neither.
  EXPECT_THAT(auth_->CheckDevice(Call("Bearer app-secret").context(), "dev-1"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("devices= in the server's tokens file")));
  EXPECT_THAT(auth_->CheckDevice(Call("Bearer nobody").context(), "dev-1"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(auth_->CheckDevice(Call(std::nullopt).context(), "dev-1"),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST_F(TokenAuthTest, BlobGetsNeedTheBearerFormOfAKnownTokenOfEitherRole) {
  EXPECT_TRUE(auth_->Knows("Bearer admin-secret"));
  EXPECT_TRUE(auth_->Knows("Bearer app-secret"));
  for (const char* header :
       {"", "Bearer ", "Bearer wrong", "admin-secret", "bearer app-secret",
        "Basic YXBwLXNlY3JldA==", "Bearer  app-secret", "Bearer app-secret "}) {
    EXPECT_FALSE(auth_->Knows(header)) << header;
  }
}

TEST_F(TokenAuthTest, ADeviceIdIsEchoedEscapedInTheDenial) {
  EXPECT_THAT(
      auth_->CheckDevice(Call("Bearer fleet-secret").context(), "evil\ndevice"),
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr("'evil\\x0adevice'")));
}

TEST(TokenAuthLoad, AMalformedLineIsRefusedNamingTheFileAndLine) {
  const std::string hash = TokenHash("x");
  for (const std::string& bad :
       std::vector<std::string>{"root " + hash, "admin 1234", "admin",
                                "device " + std::string(64, 'A')}) {
    const std::string path =
        WriteTokens("malformed", "admin " + hash + "\n" + bad + "\n");
    EXPECT_THAT(
        TokenAuth::Load(path),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr(path + ":2: expected \"admin|device SHA256-HEX")))
        << bad;
  }
}

TEST(TokenAuthLoad, AFileWithoutTokensOrNoFileIsRefused) {
  const std::string empty = WriteTokens("empty", "# nothing yet\n\n   \n");
  EXPECT_THAT(
      TokenAuth::Load(empty),
      StatusIs(absl::StatusCode::kInvalidArgument, empty + ": no tokens"));
  EXPECT_THAT(TokenAuth::Load(empty + ".missing"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("cannot read the tokens file")));
}

TEST(TokenAuthOff, EveryCallerIsAnOperatorWithoutATokensFile) {
  const Call call(std::nullopt);
  EXPECT_THAT(Allow(nullptr, &call.context(), Role::kAdmin), IsOk());
  EXPECT_THAT(AllowDevice(nullptr, &call.context(), "dev-1"), IsOk());
  EXPECT_EQ(RoleOf(nullptr, &call.context()), Role::kAdmin);
}

}  // namespace
}  // namespace weightcast
