#include "client/pack/pack_command.h"

#include <filesystem>
#include <sstream>

#include "common/base/file.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/safetensors.h"
#include "common/pack/packed_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

const std::string kMixed = FixtureDir() + "/mixed.safetensors";

TEST(PackCommand, ParsesOptionsAndRejectsBadUsage) {
  auto command =
      ParsePackCommand({"m.safetensors", "-o", "out", "--tiers", "q30,lossless",
                        "--preset", "fast", "--max-tile", "1024",
                        "--max-tile-pixels", "65536", "--convs-as-pictures"});
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->pack.base.hevc.preset, "fast");
  EXPECT_EQ(command->pack.base.max_tile_size, 1024);
  EXPECT_EQ(command->pack.base.max_tile_pixels, 65536);
  EXPECT_TRUE(command->pack.policy.convolutions_as_pictures);
  EXPECT_THAT(std::string(ParsePackCommand({"m"}).status().message()),
              HasSubstr("-o"));
  EXPECT_THAT(std::string(ParsePackCommand({"m", "-o", "d", "--tiers", "q77"})
                              .status()
                              .message()),
              HasSubstr("q77"));
  EXPECT_THAT(
      std::string(
          ParsePackCommand({"m", "-o", "d", "--bogus"}).status().message()),
      HasSubstr("--bogus"));
  EXPECT_THAT(std::string(ParsePackCommand({"m", "-o", "d", "--max-tile", "9"})
                              .status()
                              .message()),
              HasSubstr("--max-tile"));
  EXPECT_THAT(std::string(ParsePackCommand(
                              {"m", "-o", "d", "--max-tile-pixels", "1000"})
                              .status()
                              .message()),
              HasSubstr("--max-tile-pixels"));
}

TEST(PackCommand, PacksEveryTierAndUnpacksToTheSameTensors) {
  const std::string dir = FreshDir("pack");
  PackCommand command =
      ParsePackCommand({kMixed, "-o", dir, "--tiers", "q27,lossless",
                        "--preset", "ultrafast"})
          .value();
  std::ostringstream report;
  ASSERT_TRUE(RunPackCommand(command, report).ok());
  EXPECT_THAT(report.str(), HasSubstr("fc1.weight"));
  EXPECT_THAT(report.str(), HasSubstr("summary"));
  const Model original = ReadSafetensorsFile(kMixed).value();
  for (const char* tier : {"q27", "lossless"}) {
    PackCommand unpack =
        ParsePackCommand({"--unpack", dir + "/" + tier + ".wcm", "-o",
                          dir + "/" + tier + ".safetensors"})
            .value();
    std::ostringstream out;
    ASSERT_TRUE(RunPackCommand(unpack, out).ok()) << tier;
    const Model back =
        ReadSafetensorsFile(dir + "/" + tier + ".safetensors").value();
    ASSERT_EQ(back.tensors.size(), original.tensors.size());
    for (size_t i = 0; i < back.tensors.size(); ++i) {
      EXPECT_EQ(back.tensors[i].name, original.tensors[i].name);
      EXPECT_EQ(back.tensors[i].shape, original.tensors[i].shape);
    }
  }
}

TEST(PackCommand, ExplainShowsTheClassOfEveryTensor) {
  PackCommand command = ParsePackCommand({"--explain", kMixed}).value();
  std::ostringstream out;
  ASSERT_TRUE(RunPackCommand(command, out).ok());
  EXPECT_THAT(out.str(), testing::ContainsRegex(
                             "fc1.weight +\\[256, 5408\\] +float32 +picture"));
  EXPECT_THAT(out.str(), testing::ContainsRegex("conv.weight .* int8"));
  EXPECT_THAT(out.str(),
              testing::ContainsRegex("bn.num_batches_tracked .* passthrough"));
}

TEST(PackCommand, DamagedTierFileIsDataLossNamingFileAndLayer) {
  const std::string dir = FreshDir("damaged");
  PackCommand command = ParsePackCommand({kMixed, "-o", dir, "--tiers", "q32",
                                          "--preset", "ultrafast"})
                            .value();
  std::ostringstream report;
  ASSERT_TRUE(RunPackCommand(command, report).ok());
  std::vector<uint8_t> bytes = ReadFileBytes(dir + "/q32.wcm").value();
  bytes[bytes.size() - 40] ^=
      0x10;  // inside the last layer's payload (fc2.bias, float32)
  ASSERT_TRUE(WriteFileAtomically(dir + "/q32.wcm", bytes).ok());
  PackCommand unpack = ParsePackCommand({"--unpack", dir + "/q32.wcm", "-o",
                                         dir + "/out.safetensors"})
                           .value();
  std::ostringstream out;
  const absl::Status status = RunPackCommand(unpack, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("q32.wcm"), HasSubstr("fc2.bias")));
  EXPECT_FALSE(std::filesystem::exists(dir + "/out.safetensors"));
}

TEST(PackCommand, PacksATorchSaveCheckpointAndUnpacksToInt8Pt) {
  const std::string dir = FreshDir("torch");
  const std::string model =
      FixtureDir() + "/training.pt";  // a full training dict
  std::ostringstream report;
  ASSERT_TRUE(RunPackCommand(ParsePackCommand({model, "-o", dir, "--tiers",
                                               "q27", "--preset", "ultrafast"})
                                 .value(),
                             report)
                  .ok());
  std::ostringstream out;
  ASSERT_TRUE(
      RunPackCommand(ParsePackCommand({"--unpack", dir + "/q27.wcm", "--int8",
                                       "-o", dir + "/q27.int8.pt"})
                         .value(),
                     out)
          .ok());
  const Model back = ReadCheckpoint(dir + "/q27.int8.pt").value();
  std::vector<std::string> names;
  for (const Tensor& t : back.tensors) names.push_back(t.name);
  EXPECT_THAT(names, testing::ElementsAre("fc1.weight", "fc1.weight.__scale__",
                                          "fc1.bias", "fc2.weight",
                                          "fc2.weight.__scale__", "fc2.bias"));
  EXPECT_EQ(back.tensors[0].dtype, DType::kInt8);
}

// --eval-bundle: SmallNet's picture layer fc1 (256 x 5408) weighted by its
// inputs' RMS on the bundle's 64 images, and unpacked to float and int8.
TEST(PackCommand, AnEvaluationBundleWeighsThePictureLayersColumns) {
  const std::string dir = FreshDir("pack_columns");
  const std::string fixtures = FixtureDir();
  std::ostringstream report;
  const absl::Status packed = RunPackCommand(
      ParsePackCommand({fixtures + "/cnn_bn.pt", "-o", dir, "--tiers", "q30",
                        "--preset", "ultrafast", "--eval-bundle",
                        fixtures + "/script.pt," + fixtures + "/eval_data.pt"})
          .value(),
      report);
  ASSERT_TRUE(packed.ok()) << packed;
  EXPECT_THAT(report.str(), HasSubstr("tensor+cols"));
  const std::vector<PackedLayer> layers =
      ParsePackedModel(ReadFileBytes(dir + "/q30.wcm").value()).value();
  int weighted = 0;
  for (const PackedLayer& layer : layers) {
    if (layer.column_scales.empty()) continue;
    ++weighted;
    EXPECT_EQ(layer.name, "fc1.weight");
    EXPECT_EQ(layer.column_scales.size(), 5408u);
  }
  EXPECT_EQ(weighted, 1);
  for (const std::string flag : {"", "--int8"}) {
    std::vector<std::string> args = {"--unpack", dir + "/q30.wcm", "-o",
                                     dir + "/back" + flag + ".safetensors"};
    if (!flag.empty()) args.push_back(flag);
    std::ostringstream out;
    ASSERT_TRUE(RunPackCommand(ParsePackCommand(args).value(), out).ok())
        << flag;
  }
  const Model back = ReadCheckpoint(dir + "/back--int8.safetensors").value();
  bool per_channel = false;
  for (const Tensor& t : back.tensors) {
    if (t.name == "fc1.weight.__scale__") per_channel = t.shape[0] == 256;
  }
  EXPECT_TRUE(per_channel);  // requantized per row

  // A bundle that is not the model's is refused naming the module.
  std::ostringstream refused;
  const absl::Status wrong = RunPackCommand(
      ParsePackCommand({fixtures + "/mlp.pt", "-o", dir + "/mlp", "--tiers",
                        "q30", "--eval-bundle",
                        fixtures + "/script.pt," + fixtures + "/eval_data.pt"})
          .value(),
      refused);
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.message()), HasSubstr("script.pt"));
  EXPECT_THAT(std::string(ParsePackCommand({"m", "-o", "d", "--eval-bundle",
                                            "only-a-module.pt"})
                              .status()
                              .message()),
              HasSubstr("MODULE,DATA"));
}

TEST(PackCommand, PolicyFileSendsConvolutionsThroughHevcAtTheirOwnQp) {
  const std::string dir = FreshDir("policy");
  const std::string policy = dir + "/policy.json";
  const std::string json =
      R"({"convolutions": "picture", "convolution_qp": 12, "min_picture_elements": 64,
                               "overrides": {"fc2.*": "float"}})";
  ASSERT_TRUE(WriteFileAtomically(
                  policy, std::vector<uint8_t>(json.begin(), json.end()))
                  .ok());
  std::ostringstream out;
  ASSERT_TRUE(
      RunPackCommand(ParsePackCommand({"--explain", FixtureDir() + "/cnn_bn.pt",
                                       "--policy", policy, "--tiers", "q30"})
                         .value(),
                     out)
          .ok());
  EXPECT_THAT(out.str(),
              testing::ContainsRegex("conv.weight .* picture +hevc@12"));
  EXPECT_THAT(out.str(),
              testing::ContainsRegex("fc1.weight .* picture +hevc@30"));
  EXPECT_THAT(out.str(),
              testing::ContainsRegex("fc2.weight .* float +float32"));
  const std::string bad = dir + "/bad.json";
  ASSERT_TRUE(
      WriteFileAtomically(bad, std::vector<uint8_t>{'{', '}', '}'}).ok());
  EXPECT_THAT(std::string(ParsePackCommand({"m", "-o", "d", "--policy", bad})
                              .status()
                              .message()),
              AllOf(HasSubstr("bad.json"), HasSubstr("layer policy")));
}

TEST(PackCommand, MissingCheckpointIsNotFound) {
  PackCommand command =
      ParsePackCommand({"/nonexistent.safetensors", "-o", "/tmp/x"}).value();
  std::ostringstream out;
  EXPECT_EQ(RunPackCommand(command, out).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace weightcast
