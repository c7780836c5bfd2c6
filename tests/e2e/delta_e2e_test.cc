// Deltas between versions against the real weightcastd: a version registered
// with a base is pulled as P pictures on the base's layers by a client that
// holds them, whole (base sent along) by one that does not, and both decode to
// the same bytes; a damaged held base falls back to a whole pull; the base's
// blobs outlive the base version; the fleet agent uses deltas by itself.
#include <filesystem>
#include <fstream>
#include <thread>

#include "client/agent/agent.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

std::string FileSha(const std::string& path) {
  return DigestToHex(Sha256(ReadFileBytes(path).value()));
}

std::vector<std::string> Files(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error))
    names.push_back(entry.path().string());
  return names;
}

// Every file in the blob store still hashes to its name.
void ExpectBlobsIntact(const std::string& data_dir) {
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(data_dir + "/blobs")) {
    if (!entry.is_regular_file()) continue;
    EXPECT_EQ(FileSha(entry.path().string()), entry.path().filename().string())
        << entry.path();
  }
}

TEST(DeltaEndToEnd,
     AClientHoldingTheBasePullsOnlyTheDeltaAndDecodesTheSameModel) {
  const std::string dir = FreshDir("delta_pull");
  const std::string data = dir + "/data";
  const std::vector<std::string> flags = {"--preset", "ultrafast",
                                          "--grace-seconds", "1"};
  auto server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "lossless,q27"})
          .ok());
  RegisterOptions v2{"cnn", "v2", kFixtures + "/cnn_bn_finetuned.pt",
                     "lossless,q27"};
  v2.base_version = "v1";
  ASSERT_TRUE(client->Register(v2).ok());
  EXPECT_EQ(client->Describe("cnn", "v2").value().base_version, "v1");

  // A device holds v1 at q27; it pulls v2 at q27.
  const std::string bases = dir + "/bases";
  PullOptions pull{"cnn", "v1", {"q27"}, dir + "/v1.pt"};
  pull.base_dir = bases;
  const PullResult first = client->Pull(pull).value();
  EXPECT_EQ(first.delta_layers, 0);
  ASSERT_EQ(Files(bases).size(), 1u);  // fc1.weight, the one HEVC layer
  pull.version = "v2";
  pull.output_path = dir + "/v2-delta.pt";
  const PullResult delta = client->Pull(pull).value();
  EXPECT_EQ(delta.delta_layers, 1);
  EXPECT_FALSE(delta.delta_fallback);

  // A device without v1 pulls the same v2: the base comes along, the result is
  // the same bytes.
  PullOptions fresh{"cnn", "v2", {"q27"}, dir + "/v2-fresh.pt"};
  const PullResult whole = client->Pull(fresh).value();
  EXPECT_EQ(whole.delta_layers, 1);
  EXPECT_EQ(FileSha(dir + "/v2-delta.pt"), FileSha(dir + "/v2-fresh.pt"));
  EXPECT_LT(delta.bytes * 20, whole.bytes)
      << delta.bytes << " vs " << whole.bytes;
  EXPECT_GT(whole.bytes, first.bytes);  // v1's layer + the delta

  // The lossless tier has no deltas: int8 + zstd, coded on its own.
  PullOptions lossless{"cnn", "v2", {"lossless"}, dir + "/v2-lossless.pt"};
  lossless.base_dir = bases;
  EXPECT_EQ(client->Pull(lossless).value().delta_layers, 0);

  // A damaged held base: the pull notices and pulls whole, to the same bytes.
  const std::string held = Files(bases).front();
  std::vector<uint8_t> bytes = ReadFileBytes(held).value();
  bytes[bytes.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomically(held, bytes).ok());
  pull.output_path = dir + "/v2-after-damage.pt";
  const PullResult repaired = client->Pull(pull).value();
  EXPECT_TRUE(repaired.delta_fallback);
  ASSERT_EQ(repaired.warnings.size(), 1u);
  EXPECT_THAT(repaired.warnings[0], HasSubstr("without deltas"));
  EXPECT_EQ(FileSha(dir + "/v2-after-damage.pt"),
            FileSha(dir + "/v2-fresh.pt"));
  EXPECT_EQ(
      FileSha(held),
      std::filesystem::path(held).stem().string());  // the good base is back

  // Bad registrations name what is wrong and add nothing.
  RegisterOptions orphan{"cnn", "v3", kFixtures + "/cnn_bn_finetuned.pt",
                         "q27"};
  orphan.base_version = "v9";
  auto refused = client->Register(orphan);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("base version"));
  RegisterOptions other{"cnn", "v3", kFixtures + "/mixed.safetensors", "q27"};
  other.base_version = "v1";
  EXPECT_EQ(client->Register(other).status().code(),
            absl::StatusCode::kOk);  // same tensors, other format
  RegisterOptions mlp{"cnn", "v4", kFixtures + "/mlp.pt", "q27"};
  mlp.base_version = "v1";
  auto architecture = client->Register(mlp);
  EXPECT_EQ(architecture.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(architecture.status().message()),
              HasSubstr("another architecture"));

  // The base version deleted and the server restarted: v2 still pulls, to the
  // same bytes.
  ASSERT_TRUE(client->Delete("cnn", "v1").ok());
  ASSERT_EQ(server->Stop(), 0);
  server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  client = Client::Connect({server->address()}).value();
  fresh.output_path = dir + "/v2-after-delete.pt";
  ASSERT_TRUE(client->Pull(fresh).ok());
  EXPECT_EQ(FileSha(dir + "/v2-after-delete.pt"),
            FileSha(dir + "/v2-fresh.pt"));
  EXPECT_EQ(server->Stop(), 0);
  ExpectBlobsIntact(data);
  if (!HasFailure()) {
    RecordReliability(
        "a held base layer with one flipped bit under a delta pull",
        "the delta's base SHA-256 does not match: the SDK deletes the damaged "
        "file and pulls whole",
        "the model written is byte-identical to a whole pull; the base file is "
        "good again");
    RecordReliability(
        "a base version that does not exist; a base with another architecture; "
        "the base deleted",
        "INVALID_ARGUMENT naming the base version; INVALID_ARGUMENT naming the "
        "differing tensor; "
        "the delta version still pulls (its base layer blob is kept by "
        "reference)",
        "every blob's SHA-256 matches its name after restart");
  }
}

TEST(DeltaEndToEnd, TheAgentTakesDeltasDuringARollout) {
  const std::string dir = FreshDir("delta_agent");
  auto server = ServerProcess::Start(
      kServer, dir + "/data",
      {"--preset", "ultrafast", "--keepalive-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto admin = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      admin->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "q27"}).ok());
  RegisterOptions v2{"cnn", "v2", kFixtures + "/cnn_bn_finetuned.pt", "q27"};
  v2.base_version = "v1";
  ASSERT_TRUE(admin->Register(v2).ok());

  auto device = Client::Connect({server->address()}).value();
  AgentOptions options{"device-1", dir + "/device", {"cnn"}};
  options.tier.name = "q27";
  options.max_backoff = absl::Seconds(1);
  Agent agent(device.get(), options);
  std::atomic<bool> stop{false};
  std::thread thread([&] { agent.Run(stop).IgnoreError(); });
  auto installed = [&](const std::string& version) {
    for (int i = 0; i < 600 && Agent::Installed(options.dir, "cnn") != version;
         ++i) {  // 60 s at most
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Agent::Installed(options.dir, "cnn") == version;
  };
  ASSERT_TRUE(admin->StartRollout("cnn", "v1", 100, {}).ok());
  EXPECT_TRUE(installed("v1"));
  ASSERT_TRUE(admin->StartRollout("cnn", "v2", 100, {}).ok());
  EXPECT_TRUE(installed("v2"));
  stop = true;
  thread.join();
  EXPECT_EQ(agent.stats().delta_layers, 1);
  // What the agent installed is what any client pulls.
  ASSERT_TRUE(admin->Pull({"cnn", "v2", {"q27"}, dir + "/v2.pt"}).ok());
  EXPECT_EQ(FileSha(options.dir + "/cnn/current/model.pt"),
            FileSha(dir + "/v2.pt"));
  // The bases kept are what v2 and v1 (previous) need: v1's fc1.weight layer.
  EXPECT_EQ(Files(options.dir + "/cnn/bases").size(), 1u);
}

}  // namespace
}  // namespace weightcast
