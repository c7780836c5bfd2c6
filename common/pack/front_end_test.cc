#include "common/pack/front_end.h"

#include <cmath>
#include <random>

#include "common/base/sha256.h"
#include "common/pack/delta_codec.h"
#include "common/pack/layer_codec.h"
#include "common/pack/layer_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kRows = 256, kCols = 384;

// i.i.d. N(0, 0.02^2), then each row times `row_scale(r)`.
template <typename RowScale>
std::vector<float> Gaussian(uint32_t seed, RowScale row_scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(kRows * kCols);
  for (int64_t r = 0; r < kRows; ++r) {
    const float scale = row_scale(r);
    for (int64_t c = 0; c < kCols; ++c)
      values[r * kCols + c] = scale * normal(rng);
  }
  return values;
}

Tensor GaussianLayer(uint32_t seed = 1) {
  return MakeFloat32Tensor("fc.weight", {kRows, kCols},
                           Gaussian(seed, [](int64_t) { return 1.0f; }));
}

// Issue 21's layer: Gaussian with 0.01 % of the weights x20.
Tensor OutlierLayer(uint32_t seed = 2) {
  std::vector<float> values = Gaussian(seed, [](int64_t) { return 1.0f; });
  std::mt19937 rng(seed + 100);
  std::uniform_int_distribution<size_t> index(0, values.size() - 1);
  for (int i = 0; i < 10; ++i) values[index(rng)] *= 20.0f;
  return MakeFloat32Tensor("attn.q.weight", {kRows, kCols}, values);
}

// A batch norm folded into the rows: log-normal row scales (sigma 1).
Tensor FoldedLayer(std::vector<int64_t> shape = {kRows, kCols},
                   uint32_t seed = 3) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> log_scale(0.0f, 1.0f);
  std::vector<float> scales(kRows);
  for (float& s : scales) s = std::exp(log_scale(rng));
  return MakeFloat32Tensor(
      "conv.weight", std::move(shape),
      Gaussian(seed, [&](int64_t r) { return scales[r]; }));
}

LayerEncodeOptions Auto(LayerCodec codec, int qp = 0) {
  LayerEncodeOptions options;
  options.codec = codec;
  options.hevc = {.qp = qp, .lossless = false, .preset = "ultrafast"};
  options.choose_scheme = true;
  return options;
}

PackedLayer Encoded(const Tensor& tensor, LayerEncodeOptions options) {
  auto layer = EncodeLayer(tensor, options);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *std::move(layer);
}

PackedLayer Fixed(const Tensor& tensor, LayerEncodeOptions options,
                  QuantScheme scheme) {
  options.choose_scheme = false;
  options.scheme = scheme;
  return Encoded(tensor, options);
}

TEST(FrontEnd, RuleRepairsOnlyNonTransparentInt8ByMoreThanABit) {
  EXPECT_NEAR(kTransparentInt8SqnrDb, 22.83,
              0.01);  // 5 effective bits per channel
  EXPECT_TRUE(PerChannelWins(
      13.5, 43.1));  // rows at log-normal scales (a folded batch norm)
  EXPECT_FALSE(PerChannelWins(20.0, 25.0));  // a bit is not gained
  EXPECT_FALSE(PerChannelWins(
      29.9,
      41.6));  // the least transparent Fashion-MNIST layer: keep its bytes
  EXPECT_FALSE(PerChannelWins(39.0, 42.3));  // an i.i.d. Gaussian layer
}

TEST(FrontEnd, ChoosesFromTheInt8ValuesOfEachFrontEnd) {
  const Tensor gaussian = GaussianLayer();
  auto choice = ChooseFrontEnd(gaussian.name, gaussian.shape,
                               ToFloat32(gaussian).value());
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->scheme, QuantScheme::kPerTensorSymmetric);
  EXPECT_GT(choice->per_tensor_channel_sqnr_db, 37.0);
  EXPECT_GT(choice->per_channel_channel_sqnr_db,
            choice->per_tensor_channel_sqnr_db);  // ~3 dB: a finer step

  const Tensor outliers = OutlierLayer();
  choice = ChooseFrontEnd(outliers.name, outliers.shape,
                          ToFloat32(outliers).value());
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->scheme, QuantScheme::kPerTensorSymmetric);
  EXPECT_TRUE(choice->outliers);
  // 8 of the 10 planted weights are beyond 6 RMS (a small weight x20 is not).
  EXPECT_EQ(choice->per_tensor_outliers, 8);
  EXPECT_LT(choice->per_tensor_channel_sqnr_db, kTransparentInt8SqnrDb);
  EXPECT_GT(choice->per_tensor_outliers_channel_sqnr_db, 37.0);

  const std::vector<float> one_row(64, 1.0f);  // one channel: nothing to choose
  choice = ChooseFrontEnd("row", {1, 64}, one_row);
  ASSERT_TRUE(choice.ok());
  EXPECT_EQ(choice->scheme, QuantScheme::kPerTensorSymmetric);
  EXPECT_THAT(
      ChooseFrontEnd("bad", {1, 1}, std::vector<float>{NAN}).status().message(),
      HasSubstr("'bad'"));
}

TEST(FrontEnd, OutlierLayerGetsPerTensorPlusOutliersUnderAutoAtEveryTier) {
  const Tensor w = OutlierLayer();
  for (int qp : {0, 22, 27, 32}) {
    const LayerEncodeOptions options =
        qp ? Auto(LayerCodec::kHevc, qp) : Auto(LayerCodec::kZstdInt8);
    const PackedLayer per_tensor =
        Fixed(w, options, QuantScheme::kPerTensorSymmetric);
    const PackedLayer per_channel =
        Fixed(w, options, QuantScheme::kPerChannelSymmetric);
    const PackedLayer chosen = Encoded(w, options);
    EXPECT_EQ(chosen.scheme, QuantScheme::kPerTensorSymmetric) << "qp " << qp;
    EXPECT_EQ(chosen.scales.size(), 1u);
    EXPECT_EQ(chosen.outliers.indices.size(), 8u) << "qp " << qp;
    EXPECT_GT(chosen.fidelity.sqnr_db, per_tensor.fidelity.sqnr_db + 6.0)
        << "qp " << qp;
    // Ahead of per-channel scales on both axes: more SQNR in fewer bits.
    EXPECT_GT(chosen.fidelity.sqnr_db, per_channel.fidelity.sqnr_db)
        << "qp " << qp;
    EXPECT_LT(chosen.fidelity.bits_per_weight,
              per_channel.fidelity.bits_per_weight)
        << "qp " << qp;
  }
  // At q22 per-tensor scales leave the Gaussian weights a few int8 steps, which
  // HEVC erases.
  const PackedLayer q22 = Encoded(w, Auto(LayerCodec::kHevc, 22));
  EXPECT_GE(q22.fidelity.sqnr_db, 15.0);
  EXPECT_LT(
      Fixed(w, Auto(LayerCodec::kHevc, 22), QuantScheme::kPerTensorSymmetric)
          .fidelity.sqnr_db,
      5.0);
}

TEST(FrontEnd, GaussianLayerKeepsPerTensorScalesAndItsBytes) {
  const Tensor w = GaussianLayer();
  for (int qp : {0, 22, 37}) {
    const LayerEncodeOptions options =
        qp ? Auto(LayerCodec::kHevc, qp) : Auto(LayerCodec::kZstdInt8);
    const PackedLayer chosen = Encoded(w, options);
    const PackedLayer per_tensor =
        Fixed(w, options, QuantScheme::kPerTensorSymmetric);
    EXPECT_EQ(chosen.scheme, QuantScheme::kPerTensorSymmetric) << "qp " << qp;
    EXPECT_TRUE(chosen.outliers.empty()) << "qp " << qp;
    EXPECT_EQ(chosen.tiles, per_tensor.tiles) << "qp " << qp;
  }
}

TEST(FrontEnd, FoldedBatchNormConvolutionGetsPerChannelAsInt8) {
  const Tensor w = FoldedLayer({kRows, kCols / 3, 3, 1});
  const PackedLayer per_tensor =
      Fixed(w, Auto(LayerCodec::kZstdInt8), QuantScheme::kPerTensorSymmetric);
  const PackedLayer chosen = Encoded(w, Auto(LayerCodec::kZstdInt8));
  EXPECT_EQ(chosen.scheme, QuantScheme::kPerChannelSymmetric);
  EXPECT_TRUE(chosen.outliers.empty());
  EXPECT_GT(chosen.fidelity.channel_sqnr_db, 40.0);
  EXPECT_LT(per_tensor.fidelity.channel_sqnr_db, 20.0);
  // Every layer's SQNR rises too, not only the channel average.
  EXPECT_GT(chosen.fidelity.sqnr_db, per_tensor.fidelity.sqnr_db);
  // Decodes to exactly its int8 values with one scale per output channel.
  auto decoded = DecodeLayer(chosen);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->int8->scheme, QuantScheme::kPerChannelSymmetric);
  EXPECT_EQ(decoded->int8->scales, chosen.scales);
}

TEST(FrontEnd, FloatAndPassthroughLayersAreNotQuantized) {
  const Tensor bias = MakeFloat32Tensor("fc.bias", {4}, {1, 2, 3, 4});
  const PackedLayer layer = Encoded(bias, Auto(LayerCodec::kFloat32));
  EXPECT_EQ(layer.codec, LayerCodec::kFloat32);
  EXPECT_TRUE(std::isinf(layer.fidelity.channel_sqnr_db));
}

// Deltas and refinements quantize with the base layer's scales: a per-channel
// base gives a per-channel delta that decodes bit-exactly against it.
TEST(FrontEnd, PerChannelLayerRoundTripsThroughDeltaAndRefinementBitExactly) {
  const Tensor a = FoldedLayer();
  std::vector<float> moved = ToFloat32(a).value();
  std::mt19937 rng(9);
  std::normal_distribution<float> step(
      0.0f, 0.005f);  // relative: within each row's scale range
  for (size_t i = 0; i < moved.size(); i += 3) moved[i] *= 1.0f + step(rng);
  const Tensor b = MakeFloat32Tensor(a.name, a.shape, moved);

  LayerEncodeOptions options = Auto(LayerCodec::kHevc, 32);
  options.max_tile_size = 128;
  const PackedLayer base = Encoded(a, options);
  ASSERT_EQ(base.scheme, QuantScheme::kPerChannelSymmetric);
  const std::vector<uint8_t> held = SerializePackedLayer(base);
  size_t consumed = 0;
  ASSERT_TRUE(ParsePackedLayer(held, &consumed).ok());

  for (const auto& [target, offset] :
       {std::make_pair(&b, -3),
        std::make_pair(&a, -10)}) {  // delta, refinement
    auto delta = EncodeLayerDelta(base, a, *target, offset);
    ASSERT_TRUE(delta.ok()) << delta.status();
    ASSERT_TRUE(delta->has_value()) << "offset " << offset;
    EXPECT_EQ((*delta)->scheme, QuantScheme::kPerChannelSymmetric);
    EXPECT_EQ((*delta)->scales, base.scales);
    const std::vector<uint8_t> bytes = SerializePackedLayer(**delta);
    auto parsed = ParsePackedLayer(bytes, &consumed);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    auto rebuilt =
        DecodeLayerDelta(held, *parsed);  // checks the recorded SHA-256
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->int8->scheme, QuantScheme::kPerChannelSymmetric);
    EXPECT_EQ(rebuilt->int8->scales, base.scales);
    const auto& values = rebuilt->int8->values;
    EXPECT_EQ(
        Sha256(absl::MakeConstSpan(
            reinterpret_cast<const uint8_t*>(values.data()), values.size())),
        (*delta)->decoded_sha256);
    if (target == &a) {
      EXPECT_GT((*delta)->fidelity.sqnr_db, base.fidelity.sqnr_db);  // refined
    }
  }
}

TEST(FrontEnd, PolicyNamesTheFrontEndAndOptionsFollowIt) {
  const Tensor w = GaussianLayer();
  const TierSpec q27 = ParseTier("q27").value();
  LayerEncodeOptions options = OptionsFor(w, LayerPolicy{}, q27, {});
  EXPECT_TRUE(options.choose_scheme);  // auto is the default

  auto policy = ParseLayerPolicy(R"({"scheme": "per-channel"})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  options = OptionsFor(w, *policy, q27, {});
  EXPECT_FALSE(options.choose_scheme);
  EXPECT_EQ(options.scheme, QuantScheme::kPerChannelSymmetric);
  EXPECT_THAT(DescribeLayerPolicy(*policy),
              HasSubstr("int8 scales per-channel-symmetric"));

  policy = ParseLayerPolicy(R"({"scheme": "per-tensor-asymmetric"})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(OptionsFor(w, *policy, q27, {}).scheme,
            QuantScheme::kPerTensorAsymmetric);
  EXPECT_THAT(DescribeLayerPolicy(LayerPolicy{}),
              HasSubstr("per-channel where that repairs a layer (auto)"));

  EXPECT_THAT(ParseLayerPolicy(R"({"scheme": "per-row"})").status().message(),
              HasSubstr("scheme: unknown quantization front end 'per-row'"));
  EXPECT_THAT(ParseLayerPolicy(R"({"scheme": 1})").status().message(),
              HasSubstr("scheme: must be"));
}

}  // namespace
}  // namespace weightcast
