// Hostile and damaged files against the real weightcastd and weightcast-pack:
// each is refused with INVALID_ARGUMENT (exit code 4 for the CLI) saying what
// is wrong, stores nothing, and what was registered before still pulls.
// TorchScript archives, as a checkpoint and as an evaluation module: code/ that
// makes libtorch's compiler throw (a syntax error: std::runtime_error; an
// unknown op: ErrorReport), and tensors libtorch loads although they reach past
// their data (a record cut short; a view larger than its storage), which used
// to be read and written out of bounds. safetensors whose tensors overlap or
// leave bytes uncovered, which the reference implementation refuses.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kPack = BuildDir() + "/client/pack/weightcast-pack";
const std::string kFixtures = FixtureDir();
const std::vector<std::string> kFlags = {
    "--workers", "2", "--preset", "ultrafast", "--grace-seconds", "1"};

// A fixture's damage and a phrase libtorch's reason for refusing it contains.
struct Damaged {
  std::string fixture;
  std::string reason;
};
const Damaged kDamagedTorchScript[] = {
    {"script_bad_syntax.pt",
     "not a loadable TorchScript module: expected newline"},
    {"script_unknown_op.pt",
     "not a loadable TorchScript module: Unknown builtin op: aten::no_such_op"},
    {"script_short_storage.pt",
     "record data/7 holds 2768896 bytes but data.pkl declares a storage of "
     "1384448"},
    {"script_view_past_storage.pt",
     "tensor 'fc2.bias' [10] reaches past its stored data (40 bytes needed, 20 "
     "stored)"}};

// Writes a safetensors file: the header text as given, then `data_bytes` bytes
// of 0x3f.
std::string WriteSafetensors(const std::string& path, const std::string& header,
                             size_t data_bytes) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i)
    bytes[i] =
        static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  bytes += header + std::string(data_bytes, '\x3f');
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

size_t FilesUnder(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    n += e.is_regular_file();
  return n;
}

// A server with one good version (mlp/v1, tier q27, encoded) to check nothing
// else is disturbed.
class HostileFilesEndToEnd : public ::testing::Test {
 protected:
  void StartWithOneModel(const std::string& name) {
    dir_ = FreshDir(name);
    auto server = ServerProcess::Start(kServer, dir_ + "/data", kFlags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<ServerProcess>(*std::move(server));
    client_ = Client::Connect({server_->address()}).value();
    auto registered =
        client_->Register({"mlp", "v1", kFixtures + "/mlp.pt", "q27"});
    ASSERT_TRUE(registered.ok()) << registered.status();
    ASSERT_TRUE(
        client_->Pull({"mlp", "v1", {"q27"}, dir_ + "/before.pt"}).ok());
    blob_files_ = FilesUnder(dir_ + "/data/blobs");
  }

  // Nothing added to the registry or the blob store, no upload left behind;
  // mlp/v1 still pulls.
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

TEST_F(HostileFilesEndToEnd,
       DamagedTorchScriptCheckpointIsInvalidArgumentAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWithOneModel("hostile_torchscript_checkpoint"));
  for (const Damaged& damaged : kDamagedTorchScript) {
    auto refused = client_->Register(
        {"cnn", "v1", kFixtures + "/" + damaged.fixture, "q27"});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
        << damaged.fixture << ": " << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr(damaged.reason));
  }
  ExpectNothingStoredAndTheGoodModelPulls();
  if (!HasFailure()) {
    RecordReliability(
        "a TorchScript checkpoint whose code/ has a syntax error (libtorch "
        "throws std::runtime_error) "
        "or an unknown op (ErrorReport), or whose record is cut short, or "
        "whose tensor reaches past "
        "its storage (libtorch loads both)",
        "INVALID_ARGUMENT \"...: not a loadable TorchScript module: expected "
        "newline ...\" / "
        "\"... Unknown builtin op: aten::no_such_op.\" / \"...: record data/7 "
        "holds 2768896 bytes but "
        "data.pkl declares a storage of 1384448 float32 elements\" / \"... "
        "tensor 'fc2.bias' [10] "
        "reaches past its stored data\" (was: UNKNOWN \"Unexpected error in "
        "RPC handling\"; the cut "
        "record killed weightcastd with SIGSEGV)",
        "no version added, blob store file count unchanged, no upload left in "
        "tmp/, an earlier version still pulls");
  }
}

TEST_F(HostileFilesEndToEnd,
       DamagedTorchScriptEvaluationModuleIsInvalidArgumentAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWithOneModel("hostile_torchscript_eval_module"));
  for (const Damaged& damaged : kDamagedTorchScript) {
    RegisterOptions options{"cnn", "v1", kFixtures + "/cnn_bn.pt", "q27"};
    options.eval_module_path = kFixtures + "/" + damaged.fixture;
    options.eval_data_path = kFixtures + "/eval_data.pt";
    auto refused = client_->Register(options);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
        << damaged.fixture << ": " << refused.status();
    EXPECT_THAT(
        std::string(refused.status().message()),
        AllOf(HasSubstr("evaluation bundle"), HasSubstr(damaged.reason)));
  }
  ExpectNothingStoredAndTheGoodModelPulls();
  if (!HasFailure()) {
    RecordReliability(
        "an evaluation module that is a damaged TorchScript archive (code/ the "
        "compiler rejects, a "
        "record cut short, a tensor past its storage)",
        "INVALID_ARGUMENT \"evaluation bundle: ...: <libtorch's reason, or the "
        "record or tensor>\" "
        "(was: the cut record killed weightcastd with SIGSEGV)",
        "no version added, blob store file count unchanged, no upload left in "
        "tmp/, an earlier version still pulls");
  }
}

TEST_F(HostileFilesEndToEnd,
       PackRefusesADamagedTorchScriptCheckpointWithExitCode4) {
  const std::string dir = FreshDir("hostile_pack_torchscript");
  for (const Damaged& damaged : kDamagedTorchScript) {
    const std::string out = dir + "/" + damaged.fixture;
    const std::string command = std::string(kPack) + " " + kFixtures + "/" +
                                damaged.fixture + " -o " + out +
                                " --tiers q27 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[4096];
    while (size_t n = fread(buffer, 1, sizeof(buffer), pipe))
      output.append(buffer, n);
    const int status = pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status))
        << damaged.fixture << " died of signal " << WTERMSIG(status) << ":\n"
        << output;
    EXPECT_EQ(WEXITSTATUS(status), 4) << damaged.fixture << ":\n"
                                      << output;  // 4: bad or damaged input
    EXPECT_THAT(output,
                AllOf(HasSubstr(damaged.fixture), HasSubstr(damaged.reason)));
    EXPECT_FALSE(std::filesystem::exists(out + "/q27.wcm"));
  }
  if (!HasFailure()) {
    RecordReliability(
        "weightcast-pack given a damaged TorchScript archive (code/ the "
        "compiler rejects, a record "
        "cut short, a tensor past its storage)",
        "exit code 4, \"weightcast-pack: FILE: <libtorch's reason, or the "
        "record or tensor>\" "
        "(was: abort, exit 134)",
        "no tier file written");
  }
}

TEST_F(
    HostileFilesEndToEnd,
    SafetensorsWithOverlappingOrUncoveredBytesIsInvalidArgumentAndStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartWithOneModel("hostile_safetensors_layout"));
  // fc.bias is the last 16 bytes of fc.weight: one region read as two tensors.
  const std::string overlap = WriteSafetensors(
      dir_ + "/overlap.safetensors",
      R"({"fc.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"fc.bias":{"dtype":"F32","shape":[4],"data_offsets":[48,64]}})",
      64);
  auto refused = client_->Register({"lin", "v1", overlap, "q27"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("tensor 'fc.bias': data_offsets [48, 64] overlap those "
                        "of tensor 'fc.weight' [0, 64]"));
  // 16 bytes between fc.weight and fc.bias that no tensor covers.
  const std::string hole = WriteSafetensors(
      dir_ + "/hole.safetensors",
      R"({"fc.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"fc.bias":{"dtype":"F32","shape":[4],"data_offsets":[80,96]}})",
      96);
  refused = client_->Register({"lin", "v1", hole, "q27"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("tensor 'fc.bias'"),
                    HasSubstr("hole: data bytes [64, 80)"),
                    HasSubstr("after tensor 'fc.weight'")));
  ExpectNothingStoredAndTheGoodModelPulls();
  if (!HasFailure()) {
    RecordReliability(
        "a safetensors upload whose tensors' data_offsets overlap (fc.bias "
        "inside fc.weight)",
        "INVALID_ARGUMENT \"...: tensor 'fc.bias': data_offsets [48, 64] "
        "overlap those of tensor "
        "'fc.weight' [0, 64]\" (was: registered)",
        "no version added, blob store file count unchanged, no upload left in "
        "tmp/, an earlier version still pulls");
    RecordReliability(
        "a safetensors upload with data bytes no tensor covers (a hole between "
        "two tensors)",
        "INVALID_ARGUMENT \"...: tensor 'fc.bias': data_offsets [80, 96] leave "
        "a hole: data bytes [64, 80) "
        "before it (after tensor 'fc.weight') belong to no tensor\" (was: "
        "registered)",
        "no version added, blob store file count unchanged, no upload left in "
        "tmp/, an earlier version still pulls");
  }
}

}  // namespace
}  // namespace weightcast
