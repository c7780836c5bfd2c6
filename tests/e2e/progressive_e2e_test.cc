// Progressive delivery against the real weightcastd: a pull of q22 with coarse
// tier q37 gets q37 first (handed over as a usable model, byte-identical to a
// plain q37 pull) and then a refinement coded as P pictures on it (tier
// "q37+q22"); the refinement is one definition (every pull and a restart give
// the same bytes); bad coarse tiers are refused by name; the fleet agent
// installs the coarse model and then the refined one.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
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
const std::vector<std::string> kFlags = {
    "--preset", "ultrafast",           "--grace-seconds",
    "1",        "--keepalive-seconds", "1"};

std::string FileSha(const std::string& path) {
  return DigestToHex(Sha256(ReadFileBytes(path).value()));
}

const TierSummary* FindTier(const ModelInfo& info, const std::string& name) {
  for (const TierSummary& t : info.tiers) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

TEST(ProgressiveEndToEnd, TheCoarseTierArrivesFirstAndTheRefinementBuildsOnIt) {
  const std::string dir = FreshDir("progressive_pull");
  const std::string data = dir + "/data";
  auto server = ServerProcess::Start(kServer, data, kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  RegisterOptions cnn{"cnn", "v1", kFixtures + "/cnn_bn.pt",
                      "lossless,q22,q37"};
  cnn.eval_module_path = kFixtures + "/script.pt";
  cnn.eval_data_path = kFixtures + "/eval_data.pt";
  ASSERT_TRUE(client->Register(cnn).ok());
  ASSERT_TRUE(client->Pull({"cnn", "v1", {"q37"}, dir + "/q37.pt"}).ok());
  const PullResult intra =
      client->Pull({"cnn", "v1", {"q22"}, dir + "/q22.pt"}).value();

  PullOptions progressive{"cnn", "v1", {"q22"}, dir + "/refined.pt"};
  progressive.coarse_tier = "q37";
  progressive.coarse_output_path = dir + "/coarse.pt";
  std::vector<CoarseModel> handed;
  std::string coarse_sha_at_handover;
  progressive.on_coarse = [&](const CoarseModel& coarse) {
    handed.push_back(coarse);
    coarse_sha_at_handover =
        FileSha(coarse.output_path);  // usable before the refinement is in
    EXPECT_FALSE(std::filesystem::exists(dir + "/refined.pt"));
  };
  auto pulled = client->Pull(progressive);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->tier, "q37+q22");
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_EQ(pulled->coarse.tier, "q37");
  // The coarse model is exactly a plain q37 pull, and it came before the
  // refinement.
  EXPECT_EQ(coarse_sha_at_handover, FileSha(dir + "/q37.pt"));
  EXPECT_LT(handed[0].bytes, pulled->bytes);
  EXPECT_EQ(pulled->delta_layers, 1);  // fc1.weight, the one picture layer

  // The refined model is finer than the coarse one; its picture layer costs
  // less than q22 alone.
  const ModelInfo info = client->Describe("cnn", "v1").value();
  const TierSummary* refined = FindTier(info, "q37+q22");
  ASSERT_NE(refined, nullptr);
  EXPECT_EQ(refined->state, "READY");
  const TierSummary* coarse = FindTier(info, "q37");
  const TierSummary* q22 = FindTier(info, "q22");
  EXPECT_GT(refined->worst_sqnr_db, coarse->worst_sqnr_db + 6)
      << refined->worst_sqnr_db << " vs " << coarse->worst_sqnr_db;
  for (size_t i = 0; i < refined->layers.size(); ++i) {
    if (refined->layers[i].codec == "LAYER_CODEC_HEVC_DELTA") {
      EXPECT_LT(refined->layers[i].bytes, q22->layers[i].bytes)
          << refined->layers[i].name;
      EXPECT_LE(refined->layers[i].qp,
                22);  // the coarsest P-picture QP that keeps q22's fidelity
    }
  }
  EXPECT_NE(FileSha(dir + "/refined.pt"),
            FileSha(dir + "/q22.pt"));  // P pictures, not q22's intra pictures
  // Coarse + refinement against q22 alone is measured in docs/EVALUATION.md
  // (scripts/eval).
  std::printf(
      "progressive %llu bytes (coarse %llu), q22 alone %llu; worst SQNR "
      "refined %.2f dB, q22 %.2f dB\n",
      static_cast<unsigned long long>(pulled->bytes),
      static_cast<unsigned long long>(handed[0].bytes),
      static_cast<unsigned long long>(intra.bytes), refined->worst_sqnr_db,
      q22->worst_sqnr_db);
  EXPECT_GE(refined->worst_sqnr_db,
            q22->worst_sqnr_db);  // the fidelity q22 promises

  // Tier selection by bounds never picks a refinement (its bytes leave out the
  // coarse tier's), even when the bound fits it.
  EXPECT_EQ(
      SelectTier(info, {.max_bytes = std::max(refined->bytes, coarse->bytes)})
          .value(),
      "q37");
  // A plain pull of the refinement tier (no hand-over) and a second progressive
  // pull agree.
  ASSERT_TRUE(
      client->Pull({"cnn", "v1", {"q37+q22"}, dir + "/refined-plain.pt"}).ok());
  EXPECT_EQ(FileSha(dir + "/refined-plain.pt"), FileSha(dir + "/refined.pt"));

  // A selected tier no finer than the coarse one is a plain pull.
  PullOptions same{"cnn", "v1", {"q37"}, dir + "/same.pt"};
  same.coarse_tier = "q37";
  same.on_coarse = [&](const CoarseModel& c) { handed.push_back(c); };
  const PullResult plain = client->Pull(same).value();
  EXPECT_EQ(plain.tier, "q37");
  EXPECT_TRUE(plain.coarse.tier.empty());
  EXPECT_EQ(handed.size(), 1u);

  // Bad coarse tiers are refused, naming the tier; nothing is added to the
  // version.
  PullOptions lossless = progressive;
  lossless.coarse_tier = "lossless";
  auto refused = client->Pull(lossless);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("'lossless'"));
  PullOptions absent = progressive;
  absent.coarse_tier = "q30";
  auto missing = client->Pull(absent);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("'q30' is not in the ladder"));
  // A refinement to a coarser tier is no tier at all.
  EXPECT_EQ(
      client->Pull({"cnn", "v1", {"q22+q37"}, dir + "/x.pt"}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Describe("cnn", "v1").value().tiers.size(), 4u);

  // The refinement survives a restart and is measured on the evaluation bundle
  // like any tier.
  ASSERT_EQ(server->Stop(), 0);
  server = ServerProcess::Start(kServer, data, kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Pull({"cnn", "v1", {"q37+q22"}, dir + "/after-restart.pt"}).ok());
  EXPECT_EQ(FileSha(dir + "/after-restart.pt"), FileSha(dir + "/refined.pt"));
  std::optional<AccuracyFigures> accuracy;
  for (int i = 0; i < 300 && !accuracy; ++i) {  // 30 s at most
    accuracy =
        FindTier(client->Describe("cnn", "v1").value(), "q37+q22")->accuracy;
    if (!accuracy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(accuracy.has_value());
  EXPECT_EQ(server->Stop(), 0);
  if (!HasFailure()) {
    RecordReliability(
        "progressive pulls naming a coarse tier that is not qNN or budget-N, "
        "or not in the ladder; a refinement "
        "from a finer to a coarser tier",
        "INVALID_ARGUMENT naming the tier; NOT_FOUND naming the missing tier; "
        "INVALID_ARGUMENT (no such tier)",
        "no tier added to the version; the refinement pulls byte-identically "
        "after a restart");
  }
}

// Both outputs of a progressive pull are written while the layers decode
// (the coarse one committed at the hand-over), byte-identical to the
// whole-model writer's: a model of a three-tile picture layer (its base
// entry's rows go to the coarse output a band at a time) and one with layers
// coded on their own (in both outputs), float and int8, both file kinds.
TEST(ProgressiveEndToEnd, StreamedOutputsAreTheWholeModelWritersBytes) {
  const std::string dir = FreshDir("progressive_streamed");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  for (const char* model : {"tall", "cnn_bn"}) {
    ASSERT_TRUE(client
                    ->Register({model, "v1", kFixtures + "/" + model + ".pt",
                                "q22,q37"})
                    .ok());
    for (const bool int8 : {false, true}) {
      for (const std::string kind : {".safetensors", ".pt"}) {
        const std::string name = absl::StrCat(model, int8 ? "_int8" : "", kind);
        PullOptions options{model, "v1", {"q22"}, dir + "/whole_" + name};
        options.coarse_tier = "q37";
        options.coarse_output_path = dir + "/whole_coarse_" + name;
        options.int8_output = int8;
        options.stream_output = false;
        auto whole = client->Pull(options);
        ASSERT_TRUE(whole.ok()) << whole.status();
        EXPECT_FALSE(whole->streamed_output);
        options.stream_output = true;
        options.decode_threads = 3;  // layers finish out of order
        options.output_path = dir + "/streamed_" + name;
        options.coarse_output_path = dir + "/streamed_coarse_" + name;
        std::string coarse_at_handover;
        options.on_coarse = [&](const CoarseModel& coarse) {
          coarse_at_handover = FileSha(coarse.output_path);
          EXPECT_FALSE(std::filesystem::exists(options.output_path));
        };
        auto streamed = client->Pull(options);
        ASSERT_TRUE(streamed.ok()) << streamed.status();
        EXPECT_TRUE(streamed->streamed_output) << name;
        EXPECT_EQ(streamed->coarse.tier, "q37");
        EXPECT_EQ(coarse_at_handover, FileSha(dir + "/whole_coarse_" + name))
            << name;
        EXPECT_EQ(FileSha(dir + "/streamed_coarse_" + name),
                  FileSha(dir + "/whole_coarse_" + name))
            << name;
        EXPECT_EQ(FileSha(dir + "/streamed_" + name),
                  FileSha(dir + "/whole_" + name))
            << name;
        EXPECT_FALSE(std::filesystem::exists(options.output_path + ".tmp"));
        EXPECT_FALSE(
            std::filesystem::exists(options.coarse_output_path + ".tmp"));
      }
    }
  }
  EXPECT_EQ(server->Stop(), 0);
}

TEST(ProgressiveEndToEnd, ABudgetTierCanBeTheCoarseModel) {
  const std::string dir = FreshDir("progressive_budget");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "budget-25k,q22"})
          .ok());
  ASSERT_TRUE(
      client->Pull({"mlp", "v1", {"budget-25k"}, dir + "/budget.pt"}).ok());
  PullOptions progressive{"mlp", "v1", {"q22"}, dir + "/refined.pt"};
  progressive.coarse_tier = "budget-25k";
  progressive.coarse_output_path = dir + "/coarse.pt";
  auto pulled = client->Pull(progressive);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->tier, "budget-25k+q22");
  EXPECT_EQ(pulled->coarse.tier, "budget-25k");
  EXPECT_EQ(FileSha(dir + "/coarse.pt"), FileSha(dir + "/budget.pt"));
  EXPECT_LE(pulled->coarse.bytes, 25000u);  // the tier's packed layers
  ASSERT_TRUE(client->Pull({"mlp", "v1", {"q22"}, dir + "/q22.pt"}).ok());
  const ModelInfo info = client->Describe("mlp", "v1").value();
  EXPECT_EQ(pulled->coarse.bytes, FindTier(info, "budget-25k")->bytes);
  EXPECT_GT(FindTier(info, "budget-25k+q22")->worst_sqnr_db,
            FindTier(info, "budget-25k")->worst_sqnr_db + 3);
  EXPECT_GE(FindTier(info, "budget-25k+q22")->worst_sqnr_db,
            FindTier(info, "q22")->worst_sqnr_db);
  EXPECT_EQ(server->Stop(), 0);
}

TEST(ProgressiveEndToEnd, TheAgentInstallsTheCoarseModelThenTheRefinedOne) {
  const std::string dir = FreshDir("progressive_agent");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto admin = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      admin->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "q22,q37"}).ok());

  auto device = Client::Connect({server->address()}).value();
  AgentOptions options{"device-1", dir + "/device", {"cnn"}};
  options.tier.name = "q22";
  options.coarse_tier = "q37";
  options.max_backoff = absl::Seconds(1);
  Agent agent(device.get(), options);
  std::atomic<bool> stop{false};
  std::thread thread([&] { agent.Run(stop).IgnoreError(); });
  ASSERT_TRUE(admin->StartRollout("cnn", "v1", 100, {}).ok());
  const std::string version_dir = options.dir + "/cnn/versions/v1";
  for (int i = 0;
       i < 600 && !(agent.stats().installs == 2 &&
                    !std::filesystem::exists(version_dir + "/refining"));
       ++i) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(100));  // 60 s at most
  }
  stop = true;
  thread.join();
  const AgentStats stats = agent.stats();
  EXPECT_EQ(stats.installs, 2);
  EXPECT_EQ(stats.coarse_installs, 1);
  EXPECT_EQ(stats.downloads, 1);
  EXPECT_EQ(stats.failures, 0);
  EXPECT_EQ(Agent::Installed(options.dir, "cnn"), "v1");
  EXPECT_FALSE(std::filesystem::exists(version_dir + "/refining"));
  ASSERT_TRUE(
      admin->Pull({"cnn", "v1", {"q37+q22"}, dir + "/refined.pt"}).ok());
  EXPECT_EQ(FileSha(options.dir + "/cnn/current/model.pt"),
            FileSha(dir + "/refined.pt"));
  // The server saw the device install the refined tier last.
  const RolloutInfo rollout = admin->GetRollout("cnn").value();
  EXPECT_EQ(rollout.Devices("v1", "INSTALLED"), 1u);
}

}  // namespace
}  // namespace weightcast
