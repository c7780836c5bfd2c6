// Crash safety: 20 rounds of kill -9 at a random moment (seeded, so a failing
// round can be replayed) while clients register versions, encode tiers, move
// rollouts and report device status. After every kill, with the server down:
// SQLite's integrity check passes on both databases, every blob the registry
// names exists and every blob's SHA-256 is its name; after the restart every
// version describes and every READY tier pulls and verifies.
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "gtest/gtest.h"
#include "server/storage/blob_store.h"
#include "server/storage/fleet_registry.h"
#include "server/storage/registry.h"
#include "server/storage/sqlite.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();
constexpr int kRounds = 20;

void ExpectSqliteIntact(const std::string& path) {
  auto db = Database::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  auto check = (*db)->Prepare("PRAGMA integrity_check");
  ASSERT_TRUE(check.ok());
  ASSERT_TRUE(check->Step().value());
  EXPECT_EQ(check->Text(0), "ok") << path;
}

// With the server down. Returns the number of blobs checked.
int ExpectStoreIntact(const std::string& data) {
  ExpectSqliteIntact(data + "/registry.db");
  ExpectSqliteIntact(data + "/fleet.db");
  auto registry = Registry::Open(data + "/registry.db");
  EXPECT_TRUE(registry.ok()) << registry.status();
  auto blobs = BlobStore::Open(data);
  EXPECT_TRUE(blobs.ok()) << blobs.status();
  if (!registry.ok() || !blobs.ok()) return 0;
  const std::vector<std::string> referenced =
      (*registry)->ReferencedBlobs().value();
  for (const std::string& sha : referenced) {
    EXPECT_TRUE(std::filesystem::exists((*blobs)->PathOf(sha)))
        << "the registry names a missing blob " << sha;
  }
  int checked = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(data + "/blobs")) {
    if (!entry.is_regular_file()) continue;
    EXPECT_EQ(DigestToHex(Sha256(ReadFileBytes(entry.path().string()).value())),
              entry.path().filename().string());
    ++checked;
  }
  EXPECT_TRUE(FleetRegistry::Open(data + "/fleet.db").ok());
  return checked;
}

TEST(CrashLoop, TwentyKillNinesAtRandomMomentsLoseNothingStored) {
  const std::string dir = FreshDir("crash_loop");
  const std::string data = dir + "/data";
  const std::vector<std::string> flags = {
      "--workers", "2", "--preset", "ultrafast", "--grace-seconds", "1"};
  std::mt19937 rng(20261123);
  int blobs_checked = 0, tiers_verified = 0, rounds = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0;
       round <= kRounds &&
       std::chrono::steady_clock::now() - start < std::chrono::minutes(8);
       ++round) {
    auto server = ServerProcess::Start(kServer, data, flags);
    ASSERT_TRUE(server.ok()) << "round " << round << ": " << server.status();
    auto client =
        Client::Connect({server->address(), absl::Seconds(20)}).value();
    // What the previous round stored is there and verifies (the last pass
    // checks every round's).
    const auto models = client->List().value();
    for (const auto& [model, versions] : models) {
      if (round < kRounds && model != absl::StrCat("m", round - 1)) continue;
      for (const std::string& version : versions) {
        auto info = client->Describe(model, version);
        ASSERT_TRUE(info.ok())
            << model << "/" << version << ": " << info.status();
        for (const TierSummary& tier : info->tiers) {
          if (tier.state != "READY") continue;
          auto pulled = client->Pull({model, version, {tier.name}, ""});
          EXPECT_TRUE(pulled.ok())
              << "round " << round << " " << model << "/" << version << " "
              << tier.name << ": " << pulled.status();
          ++tiers_verified;
        }
      }
    }
    if (round == kRounds) break;  // the final check, after the last kill
    // Traffic until the kill: registrations, encodings, rollouts, device
    // reports.
    std::atomic<bool> killed{false};
    std::thread traffic([&, round] {
      for (int step = 0; !killed.load() && step < 50; ++step) {
        const std::string model = absl::StrCat("m", round);
        const std::string version = absl::StrCat("v", step);
        if (!client
                 ->Register({model, version,
                             kFixtures + (step % 2 ? "/cnn_bn.pt" : "/mlp.pt"),
                             "lossless,q27,q32"})
                 .ok()) {
          continue;
        }
        client->Warm(model, version, {}).IgnoreError();
        client->StartRollout(model, version, step * 10 % 100, {}).IgnoreError();
        client
            ->ReportStatus({absl::StrCat("dev-", step), model, version, "q27",
                            "INSTALLED"})
            .IgnoreError();
        // No reconnects: a pull the kill cut would retry with backoff for
        // seconds (ClientEndToEnd tests resuming), while this test moves on to
        // the next round.
        PullOptions pull{model, version, {"q27"}, ""};
        pull.max_reconnects = 0;
        client->Pull(pull).IgnoreError();
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::uniform_int_distribution<int>(50, 1500)(rng)));
    server->Kill();
    killed = true;
    traffic.join();
    client.reset();
    blobs_checked += ExpectStoreIntact(data);
    ++rounds;
    if (::testing::Test::HasFailure()) {
      RecordReliability(absl::StrCat("kill -9, round ", round),
                        "integrity check FAILED", "see the test log");
      return;
    }
  }
  ASSERT_EQ(rounds, kRounds) << "the rounds did not fit in the time limit";
  RecordReliability(
      absl::StrCat(rounds,
                   " x kill -9 at a random moment (50-1500 ms) during "
                   "registrations, tier "
                   "encodes, rollouts and device reports"),
      "restarts every time; SQLite integrity_check ok on registry.db and "
      "fleet.db after each",
      absl::StrCat("every referenced blob present, every blob's SHA-256 equal "
                   "to its name (",
                   blobs_checked,
                   " checks); every READY tier pulled and verified (",
                   tiers_verified, " pulls)"));
}

}  // namespace
}  // namespace weightcast
