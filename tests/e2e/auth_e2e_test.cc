// Bearer tokens against the real weightcastd: the tokens file holds only
// hashes; no or an unknown token is UNAUTHENTICATED, a device token on an admin
// call PERMISSION_DENIED, a device token may pull, describe, watch and report,
// an admin token everything; health needs none; a malformed tokens file stops
// the server at start naming the line.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

std::unique_ptr<Client> As(const std::string& address,
                           const std::string& token) {
  ConnectOptions options{address, absl::Seconds(30)};
  options.token = token;
  return Client::Connect(options).value();
}

TEST(AuthEndToEnd, TokensAreCheckedByRole) {
  const std::string dir = FreshDir("auth_roles");
  {
    std::ofstream tokens(dir + "/tokens");
    tokens << "# operators\nadmin " << TokenHash("admin-secret")
           << " ops\n\ndevice " << TokenHash("device-secret")
           << " fleet devices=dev-*,lab-7  # the fleet\ndevice "
           << TokenHash("app-secret") << " app\n";
  }
  auto server = ServerProcess::Start(kServer, dir + "/data",
                                     {"--tokens", dir + "/tokens"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = server->address();
  auto admin = As(address, "admin-secret");
  auto device = As(address, "device-secret");
  auto nobody = As(address, "");
  auto stranger = As(address, "guess");

  ASSERT_TRUE(
      admin->Register({"m", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  const RegisterOptions again{"m", "v2", kFixtures + "/mlp.pt", "lossless"};
  EXPECT_EQ(nobody->Register(again).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(stranger->Register(again).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(device->Register(again).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(device->Delete("m", "v1").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(device->StartRollout("m", "v1", 100, {}).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(nobody->Pull({"m", "v1", {"lossless"}, ""}).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(stranger->Describe("m", "v1").status().code(),
            absl::StatusCode::kUnauthenticated);

  auto pulled = device->Pull({"m", "v1", {"lossless"}, dir + "/m.pt"});
  EXPECT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_TRUE(device->Describe("m", "v1").ok());
  EXPECT_TRUE(
      device->ReportStatus({"dev-1", "m", "v1", "lossless", "INSTALLED"}).ok());
  // A device token speaks only for the devices it was issued for; one without
  // devices= for none.
  EXPECT_TRUE(
      device->ReportStatus({"lab-7", "m", "v1", "lossless", "INSTALLED"}).ok());
  auto app = As(address, "app-secret");
  for (const auto& [client, id] : {std::make_pair(device.get(), "lab-70"),
                                   std::make_pair(device.get(), "other-1"),
                                   std::make_pair(app.get(), "dev-1")}) {
    const absl::Status status =
        client->ReportStatus({id, "m", "v1", "lossless", "FAILED", "spoofed"});
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << id;
    EXPECT_THAT(std::string(status.message()), HasSubstr(id));
  }
  EXPECT_TRUE(app->Pull({"m", "v1", {"lossless"}, dir + "/app.pt"})
                  .ok());  // pulls need no device
  EXPECT_TRUE(admin->StartRollout("m", "v1", 100, {}).ok());
  EXPECT_EQ(admin->GetRollout("m").value().Devices("v1", "INSTALLED"), 2u);
  EXPECT_EQ(admin->GetRollout("m").value().Devices("v1", "FAILED"),
            0u);                          // no spoofed report stored
  EXPECT_TRUE(nobody->Health().value());  // probes carry no token
  // Nothing the refused calls tried is stored.
  EXPECT_EQ(admin->List().value().front().second,
            std::vector<std::string>{"v1"});
  if (!HasFailure()) {
    RecordReliability(
        "RegisterModel / Pull / Describe with no token or an unknown one "
        "(--tokens on)",
        "UNAUTHENTICATED", "no version added; v1 pulls and verifies");
    RecordReliability(
        "RegisterModel / DeleteVersion / StartRollout with a device token",
        "PERMISSION_DENIED", "v1 still listed, nothing deleted or rolled out");
    RecordReliability(
        "a device token reporting for a device id it was not issued for "
        "(devices=dev-*,lab-7: lab-70, "
        "other-1; a token without devices=: dev-1)",
        "PERMISSION_DENIED naming the device id",
        "the rollout counts only the two genuine reports");
  }
}

TEST(AuthEndToEnd, AMalformedTokensFileStopsTheServerNamingTheLine) {
  const std::string dir = FreshDir("auth_bad_file");
  {
    std::ofstream(dir + "/tokens")
        << "admin " << TokenHash("x") << "\nroot 1234\n";
  }
  FILE* run = popen(("'" + std::string(kServer) +
                     "' --listen 127.0.0.1:0 --metrics '' --data-dir '" + dir +
                     "/data' --tokens '" + dir + "/tokens' 2>&1")
                        .c_str(),
                    "r");
  ASSERT_NE(run, nullptr);
  std::string output;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), run) != nullptr) output += buffer;
  const int status = pclose(run);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_THAT(output, HasSubstr("tokens:2"));
  if (!HasFailure())
    RecordReliability("a malformed tokens file",
                      "weightcastd exits 2 naming file:line",
                      "nothing started");
}

}  // namespace
}  // namespace weightcast
