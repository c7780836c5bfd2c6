// weightcastd on a PostgreSQL registry (--registry): a real PostgreSQL server
// the test starts (tests/testing/postgres_process.h), the real weightcastd
// binary. The registry lost under a running server: health NOT_SERVING, RPCs
// UNAVAILABLE naming the registry without its password; PostgreSQL back: the
// same process serves again.

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/postgres_process.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const char kServer[] = WEIGHTCAST_BINARY_DIR "/server/weightcastd";
const std::string kFixtures = WEIGHTCAST_FIXTURE_DIR;

std::vector<std::string> Flags(const std::string& registry) {
  return {"--registry", registry,    "--workers",       "2",
          "--preset",   "ultrafast", "--grace-seconds", "1"};
}

// Polls `client`'s health (at most 15 s) until it is `serving`.
bool AwaitHealth(Client& client, bool serving) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<bool> health = client.Health(absl::Seconds(2));
    if (health.ok() && *health == serving) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(PostgresRegistry, ARegistryLostMakesTheServerNotServingUntilItIsBack) {
  auto pg = PostgresProcess::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  ASSERT_TRUE((*pg)->CreateDatabase("weightcast").ok());
  // Trust authentication ignores the password; the server must not show it.
  const std::string url =
      absl::StrCat("postgresql://weightcast:s3cret@127.0.0.1:", (*pg)->port(),
                   "/weightcast");
  const std::string dir = FreshDir("postgres_registry_loss");
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(url));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  EXPECT_TRUE(AwaitHealth(*client, true));

  ASSERT_TRUE((*pg)->Stop().ok());
  EXPECT_TRUE(AwaitHealth(*client, false))
      << "still SERVING without PostgreSQL";
  auto listed = client->List();
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(listed.status().message()),
              HasSubstr(absl::StrCat("registry postgresql://weightcast:***@"
                                     "127.0.0.1:",
                                     (*pg)->port(), "/weightcast")));
  EXPECT_THAT(std::string(listed.status().message()), Not(HasSubstr("s3cret")));
  auto describe = client->Describe("mlp", "v1");
  EXPECT_EQ(describe.status().code(), absl::StatusCode::kUnavailable)
      << "answered from memory without its registry";

  ASSERT_TRUE((*pg)->Restart().ok());
  EXPECT_TRUE(AwaitHealth(*client, true)) << "did not recover by itself";
  auto again = client->List();
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].first, "mlp");
  EXPECT_TRUE(client->Describe("mlp", "v1").ok());
  EXPECT_EQ(server->Stop(), 0);
}

}  // namespace
}  // namespace weightcast
