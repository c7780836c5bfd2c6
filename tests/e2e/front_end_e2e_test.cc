// Quantization front ends against the real weightcastd: a checkpoint whose rows
// sit at very different scales (a folded batch norm) gets per-channel int8
// scales where they win and keeps per-tensor scales on its ordinary layer;
// describe says which, per layer and tier, and the worst SQNR over every layer;
// pulls verify every layer's SHA-256 and the int8 output carries one scale per
// output channel; a refinement tier codes on the per-channel coarse layer. A
// layer with a few x20 weights gets the outlier front end: describe names it,
// the float output restores the outliers (float16), the int8 output saturates
// them.
#include <algorithm>
#include <cmath>
#include <random>

#include "client/sdk/client.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/safetensors.h"
#include "common/tensor/fidelity.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();
const std::vector<std::string> kFlags = {"--preset", "ultrafast",
                                         "--grace-seconds", "1"};

const TierSummary& Tier(const ModelInfo& info, const std::string& name) {
  for (const TierSummary& t : info.tiers) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tier " << name;
  static const TierSummary kNone;
  return kNone;
}

const LayerSummary& Layer(const TierSummary& tier, const std::string& name) {
  for (const LayerSummary& l : tier.layers) {
    if (l.name == name) return l;
  }
  ADD_FAILURE() << "no layer " << name << " in " << tier.name;
  static const LayerSummary kNone;
  return kNone;
}

const Tensor& Find(const Model& model, const std::string& name) {
  for (const Tensor& t : model.tensors) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static const Tensor kNone;
  return kNone;
}

TEST(FrontEndEndToEnd,
     FoldedRowsGetPerChannelScalesThatDescribeShowsAndPullsCarry) {
  const std::string dir = FreshDir("front_end");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  const std::string source = kFixtures + "/folded.safetensors";
  ASSERT_TRUE(
      client->Register({"folded", "v1", source, "lossless,q27,q37"}).ok());
  for (const char* tier : {"lossless", "q27"}) {
    PullOptions options{
        "folded", "v1", {tier}, dir + "/" + tier + ".safetensors"};
    options.int8_output = true;
    auto pulled =
        client->Pull(options);  // every layer's SHA-256 checked on the way
    ASSERT_TRUE(pulled.ok()) << tier << ": " << pulled.status();
  }

  const ModelInfo info = client->Describe("folded", "v1").value();
  for (const char* name : {"lossless", "q27"}) {
    const TierSummary& tier = Tier(info, name);
    ASSERT_EQ(tier.state, "READY") << name;
    EXPECT_EQ(Layer(tier, "conv.weight").quant_scheme, "per-channel-symmetric")
        << name;  // int8 + zstd
    EXPECT_EQ(Layer(tier, "fc.weight").quant_scheme, "per-channel-symmetric")
        << name;
    EXPECT_EQ(Layer(tier, "head.weight").quant_scheme, "per-tensor-symmetric")
        << name;
    EXPECT_EQ(Layer(tier, "conv.bias").quant_scheme, "")
        << name;  // float32: no scales
    // The worst SQNR is over every layer, and names it.
    double worst = INFINITY;
    std::string worst_name;
    for (const LayerSummary& l : tier.layers) {
      if (l.sqnr_db < worst) worst = l.sqnr_db, worst_name = l.name;
    }
    EXPECT_EQ(tier.worst_layer_sqnr_db, worst) << name;
    EXPECT_EQ(tier.worst_layer, worst_name) << name;
    EXPECT_LE(tier.worst_layer_sqnr_db, tier.worst_sqnr_db)
        << name;  // picture layers only
  }
  EXPECT_EQ(SelectTier(info, {.min_sqnr_db =
                                  Tier(info, "q27").worst_layer_sqnr_db + 0.01})
                .value(),
            "lossless");

  // The int8 output: one scale per output channel for per-channel layers, one
  // for the others, and w = scale[row] * q reproduces the weights at the SQNR
  // describe reports.
  const Model original = ReadCheckpoint(source).value();
  const Model q27 = ReadCheckpoint(dir + "/q27.safetensors").value();
  EXPECT_EQ(Find(q27, "conv.weight").dtype, DType::kInt8);
  EXPECT_EQ(Find(q27, "conv.weight.__scale__").shape,
            (std::vector<int64_t>{64}));
  EXPECT_EQ(Find(q27, "fc.weight.__scale__").shape,
            (std::vector<int64_t>{128}));
  EXPECT_EQ(Find(q27, "head.weight.__scale__").shape,
            (std::vector<int64_t>{1}));
  const Tensor& q = Find(q27, "fc.weight");
  const std::vector<float> scales =
      ToFloat32(Find(q27, "fc.weight.__scale__")).value();
  std::vector<float> rebuilt(q.data.size());
  for (size_t i = 0; i < rebuilt.size(); ++i) {
    rebuilt[i] =
        scales[i / 256] * static_cast<float>(static_cast<int8_t>(q.data[i]));
  }
  EXPECT_NEAR(SqnrDb(ToFloat32(Find(original, "fc.weight")).value(), rebuilt),
              Layer(Tier(info, "q27"), "fc.weight").sqnr_db, 1e-3);

  // A refinement of q37 to q27 codes P pictures on q37's per-channel layer (its
  // scales).
  PullOptions progressive{
      "folded", "v1", {"q27"}, dir + "/refined.safetensors"};
  progressive.coarse_tier = "q37";
  progressive.int8_output = true;
  auto refined = client->Pull(progressive);
  ASSERT_TRUE(refined.ok()) << refined.status();
  EXPECT_EQ(refined->tier, "q37+q27");
  const ModelInfo after = client->Describe("folded", "v1").value();
  EXPECT_EQ(Layer(Tier(after, "q37"), "fc.weight").quant_scheme,
            "per-channel-symmetric");
  EXPECT_EQ(Layer(Tier(after, "q37+q27"), "fc.weight").quant_scheme,
            "per-channel-symmetric");
  EXPECT_EQ(Find(ReadCheckpoint(dir + "/refined.safetensors").value(),
                 "fc.weight.__scale__")
                .shape,
            (std::vector<int64_t>{128}));
}

TEST(FrontEndEndToEnd, OutlierLayerRidesASideListThroughARealPull) {
  const std::string dir = FreshDir("front_end_outliers");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  const std::string source = kFixtures + "/outliers.safetensors";
  ASSERT_TRUE(client->Register({"attn", "v1", source, "q27"}).ok());
  PullOptions float_pull{"attn", "v1", {"q27"}, dir + "/float.safetensors"};
  ASSERT_TRUE(client->Pull(float_pull).ok());
  PullOptions int8_pull{"attn", "v1", {"q27"}, dir + "/int8.safetensors"};
  int8_pull.int8_output = true;
  ASSERT_TRUE(client->Pull(int8_pull).ok());

  const ModelInfo info = client->Describe("attn", "v1").value();
  const TierSummary& tier = Tier(info, "q27");  // the tier pulled
  ASSERT_EQ(tier.state, "READY");
  EXPECT_EQ(Layer(tier, "attn.weight").quant_scheme,
            "per-tensor-symmetric+outliers");
  EXPECT_EQ(Layer(tier, "mlp.weight").quant_scheme,
            "per-tensor-symmetric");  // a Gaussian: no outliers
  const std::vector<float> original =
      ToFloat32(Find(ReadCheckpoint(source).value(), "attn.weight")).value();
  const std::vector<float> pulled =
      ToFloat32(Find(ReadCheckpoint(dir + "/float.safetensors").value(),
                     "attn.weight"))
          .value();
  const Model int8 = ReadCheckpoint(dir + "/int8.safetensors").value();
  const Tensor& q = Find(int8, "attn.weight");
  ASSERT_EQ(q.dtype, DType::kInt8);
  EXPECT_EQ(Find(int8, "attn.weight.__scale__").shape,
            (std::vector<int64_t>{1}));
  int outliers = 0;
  for (size_t i = 0; i < original.size(); ++i) {
    if (std::abs(original[i]) < 1.0f) continue;  // the planted x20 weights
    ++outliers;
    EXPECT_EQ(pulled[i], HalfToFloat(FloatToHalf(original[i]))) << i;
    EXPECT_EQ(std::abs(static_cast<int8_t>(q.data[i])), 127) << i;
  }
  EXPECT_EQ(outliers, 12);
  const double sqnr = SqnrDb(original, pulled);
  EXPECT_NEAR(sqnr, Layer(Tier(info, "q27"), "attn.weight").sqnr_db, 1e-3);
  EXPECT_GT(sqnr, 12.0);  // per-tensor scales alone leave ~0 dB at q27
}

// A layer policy's mosaic through the real server: the layer is coded as its
// rows' 16x16 blocks (describe says "+mosaic"), the client lays the decoded
// picture back (its SHA-256 checked) and gets the SQNR the server measured;
// the layer the policy does not name stays a matrix picture.
TEST(FrontEndEndToEnd, AMosaicLayerFromThePolicyIsPulledAsTheServerMeasured) {
  const std::string dir = FreshDir("front_end_mosaic");
  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  const std::string source = kFixtures + "/outliers.safetensors";
  RegisterOptions options{"attn", "v1", source, "q27"};
  options.layer_policy_json = R"({"mosaics": {"mlp.weight": [16, 16]}})";
  ASSERT_TRUE(client->Register(options).ok());
  PullOptions pull{"attn", "v1", {"q27"}, dir + "/float.safetensors"};
  ASSERT_TRUE(client->Pull(pull).ok());

  const ModelInfo info = client->Describe("attn", "v1").value();
  const TierSummary& tier = Tier(info, "q27");
  ASSERT_EQ(tier.state, "READY");
  EXPECT_EQ(Layer(tier, "mlp.weight").quant_scheme,
            "per-tensor-symmetric+mosaic");
  EXPECT_EQ(Layer(tier, "attn.weight").quant_scheme,
            "per-tensor-symmetric+outliers");
  const std::vector<float> original =
      ToFloat32(Find(ReadCheckpoint(source).value(), "mlp.weight")).value();
  const std::vector<float> pulled =
      ToFloat32(Find(ReadCheckpoint(dir + "/float.safetensors").value(),
                     "mlp.weight"))
          .value();
  const double sqnr = SqnrDb(original, pulled);
  EXPECT_NEAR(sqnr, Layer(tier, "mlp.weight").sqnr_db, 1e-3);
  EXPECT_GT(sqnr, 10.0);
}

// A policy's "auto" through the server: a layer whose rows hold 16x16 images
// is coded as their mosaic, one of independent weights as its matrix.
TEST(FrontEndEndToEnd, AnAutoMosaicIsFoundInTheWeightsTheServerReads) {
  const std::string dir = FreshDir("front_end_auto_mosaic");
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> phase(0.0f, 6.3f);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> images, independent;
  for (int r = 0; r < 256; ++r) {
    const float a = phase(rng), b = phase(rng);
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x)
        images.push_back(std::sin(0.6f * x + a) * std::cos(0.3f * y + b) +
                         normal(rng));
  }
  for (int i = 0; i < 256 * 256; ++i) independent.push_back(normal(rng));
  Model model;
  model.tensors = {MakeFloat32Tensor("fc1.weight", {256, 256}, images),
                   MakeFloat32Tensor("fc2.weight", {256, 256}, independent)};
  const std::string source = dir + "/images.safetensors";
  ASSERT_TRUE(WriteSafetensorsFile(model, source).ok());

  auto server = ServerProcess::Start(kServer, dir + "/data", kFlags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  RegisterOptions options{"images", "v1", source, "q27"};
  options.layer_policy_json = R"({"mosaics": {"*": "auto"}})";
  ASSERT_TRUE(client->Register(options).ok());
  PullOptions pull{"images", "v1", {"q27"}, dir + "/float.safetensors"};
  ASSERT_TRUE(client->Pull(pull).ok());
  const ModelInfo info = client->Describe("images", "v1").value();
  const TierSummary& tier = Tier(info, "q27");
  ASSERT_EQ(tier.state, "READY");
  EXPECT_EQ(Layer(tier, "fc1.weight").quant_scheme,
            "per-tensor-symmetric+mosaic");
  EXPECT_EQ(Layer(tier, "fc2.weight").quant_scheme, "per-tensor-symmetric");
  const std::vector<float> pulled =
      ToFloat32(Find(ReadCheckpoint(dir + "/float.safetensors").value(),
                     "fc1.weight"))
          .value();
  EXPECT_NEAR(SqnrDb(images, pulled), Layer(tier, "fc1.weight").sqnr_db, 1e-3);
}

}  // namespace
}  // namespace weightcast
