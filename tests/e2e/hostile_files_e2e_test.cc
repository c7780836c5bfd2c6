// Hostile and damaged files against the real weightcastd and weightcast-pack: each is refused
// with INVALID_ARGUMENT (exit code 4 for the CLI) saying what is wrong, stores nothing, and what
// was registered before still pulls. TorchScript archives whose code/ makes libtorch's compiler
// throw (a syntax error: std::runtime_error; an unknown op: ErrorReport), as a checkpoint and as
// an evaluation module.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const char kServer[] = WEIGHTCAST_BINARY_DIR "/server/weightcastd";
const char kPack[] = WEIGHTCAST_BINARY_DIR "/client/pack/weightcast-pack";
const std::string kFixtures = WEIGHTCAST_FIXTURE_DIR;
const std::vector<std::string> kFlags = {"--workers", "2", "--preset", "ultrafast", "--grace-seconds", "1"};

// A fixture's damage and a phrase libtorch's reason for refusing it contains.
struct Damaged {
  std::string fixture;
  std::string reason;
};
const Damaged kDamagedTorchScript[] = {{"script_bad_syntax.pt", "expected newline"},
                                       {"script_unknown_op.pt", "aten::no_such_op"}};

size_t FilesUnder(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

// A server with one good version (mlp/v1, tier q27, encoded) to check nothing else is disturbed.
class HostileFilesEndToEnd : public ::testing::Test {
 protected:
  void StartWithOneModel(const std::string& name) {
    dir_ = FreshDir(name);
    auto server = ServerProcess::Start(kServer, dir_ + "/data", kFlags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<ServerProcess>(*std::move(server));
    client_ = Client::Connect({server_->address()}).value();
    auto registered = client_->Register({"mlp", "v1", kFixtures + "/mlp.pt", "q27"});
    ASSERT_TRUE(registered.ok()) << registered.status();
    ASSERT_TRUE(client_->Pull({"mlp", "v1", {"q27"}, dir_ + "/before.pt"}).ok());
    blob_files_ = FilesUnder(dir_ + "/data/blobs");
  }

  // Nothing added to the registry or the blob store, no upload left behind; mlp/v1 still pulls.
  void ExpectNothingStoredAndTheGoodModelPulls() {
    auto models = client_->List();
    ASSERT_TRUE(models.ok()) << models.status();
    ASSERT_EQ(models->size(), 1u);
    EXPECT_EQ((*models)[0].first, "mlp");
    EXPECT_EQ((*models)[0].second, std::vector<std::string>{"v1"});
    EXPECT_EQ(FilesUnder(dir_ + "/data/blobs"), blob_files_);
    EXPECT_EQ(FilesUnder(dir_ + "/data/tmp"), 0u);
    auto pulled = client_->Pull({"mlp", "v1", {"q27"}, dir_ + "/after.pt"});
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->tier, "q27");
  }

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
  size_t blob_files_ = 0;
};

TEST_F(HostileFilesEndToEnd, DamagedTorchScriptCheckpointIsInvalidArgumentAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWithOneModel("hostile_torchscript_checkpoint"));
  for (const Damaged& damaged : kDamagedTorchScript) {
    auto refused = client_->Register({"cnn", "v1", kFixtures + "/" + damaged.fixture, "q27"});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << damaged.fixture << ": " << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                AllOf(HasSubstr("not a loadable TorchScript module"), HasSubstr(damaged.reason)));
  }
  ExpectNothingStoredAndTheGoodModelPulls();
  if (!HasFailure()) {
    RecordReliability("a TorchScript checkpoint whose code/ has a syntax error (libtorch throws std::runtime_error) "
                      "or calls an unknown op (ErrorReport)",
                      "INVALID_ARGUMENT \"...: not a loadable TorchScript module: expected newline ...\" / "
                      "\"... Unknown builtin op: aten::no_such_op.\"",
                      "no version added, blob store file count unchanged, no upload left in tmp/, an earlier version still pulls");
  }
}

TEST_F(HostileFilesEndToEnd, DamagedTorchScriptEvaluationModuleIsInvalidArgumentAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWithOneModel("hostile_torchscript_eval_module"));
  for (const Damaged& damaged : kDamagedTorchScript) {
    RegisterOptions options{"cnn", "v1", kFixtures + "/cnn_bn.pt", "q27"};
    options.eval_module_path = kFixtures + "/" + damaged.fixture;
    options.eval_data_path = kFixtures + "/eval_data.pt";
    auto refused = client_->Register(options);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << damaged.fixture << ": " << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                AllOf(HasSubstr("evaluation bundle"), HasSubstr("TorchScript"), HasSubstr(damaged.reason)));
  }
  ExpectNothingStoredAndTheGoodModelPulls();
  if (!HasFailure()) {
    RecordReliability("a registration whose evaluation module is a TorchScript archive with damaged code/ "
                      "(syntax error; unknown op)",
                      "INVALID_ARGUMENT \"evaluation bundle: ...: not a TorchScript module (torch.jit.save): "
                      "<libtorch's reason>\"",
                      "no version added, blob store file count unchanged, no upload left in tmp/, an earlier version still pulls");
  }
}

TEST_F(HostileFilesEndToEnd, PackRefusesADamagedTorchScriptCheckpointWithExitCode4) {
  const std::string dir = FreshDir("hostile_pack_torchscript");
  for (const Damaged& damaged : kDamagedTorchScript) {
    const std::string out = dir + "/" + damaged.fixture;
    const std::string command =
        std::string(kPack) + " " + kFixtures + "/" + damaged.fixture + " -o " + out + " --tiers q27 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[4096];
    while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
    const int status = pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status)) << damaged.fixture << " died of signal " << WTERMSIG(status) << ":\n" << output;
    EXPECT_EQ(WEXITSTATUS(status), 4) << damaged.fixture << ":\n" << output;  // 4: bad or damaged input
    EXPECT_THAT(output, AllOf(HasSubstr(damaged.fixture), HasSubstr("not a loadable TorchScript module"),
                              HasSubstr(damaged.reason)));
    EXPECT_FALSE(std::filesystem::exists(out + "/q27.wcm"));
  }
  if (!HasFailure()) {
    RecordReliability("weightcast-pack given a TorchScript checkpoint with damaged code/ (syntax error; unknown op)",
                      "exit code 4, \"weightcast-pack: FILE: not a loadable TorchScript module: <libtorch's reason>\" "
                      "(was: abort, exit 134)",
                      "no tier file written");
  }
}

}  // namespace
}  // namespace weightcast
