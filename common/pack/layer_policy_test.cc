#include "common/pack/layer_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

Tensor Shaped(const std::string& name, std::vector<int64_t> shape,
              DType dtype = DType::kFloat32) {
  return Tensor{name, std::move(shape), dtype, {}};
}

TEST(LayerPolicy, DefaultsFollowTheSeedPaper) {
  const LayerPolicy policy;
  EXPECT_EQ(ClassifyTensor(Shaped("fc", {64, 64}), policy),
            LayerClass::kPicture);
  EXPECT_EQ(ClassifyTensor(Shaped("small", {16, 16}), policy),
            LayerClass::kInt8);
  EXPECT_EQ(ClassifyTensor(Shaped("conv", {64, 64, 3, 3}), policy),
            LayerClass::kInt8);
  EXPECT_EQ(ClassifyTensor(Shaped("bias", {64}, DType::kFloat16), policy),
            LayerClass::kFloat);
  EXPECT_EQ(ClassifyTensor(Shaped("n", {}, DType::kInt64), policy),
            LayerClass::kPassthrough);
}

TEST(LayerPolicy, ParsesAFileWithConvolutionQpAndOverrides) {
  auto policy = ParseLayerPolicy(
      R"({"min_picture_elements": 100, "convolutions": "picture",
      "convolution_qp": 20, "overrides": {"classifier.weight": "int8", "features.*": "float"}})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(ClassifyTensor(Shaped("classifier.weight", {1000, 512}), *policy),
            LayerClass::kInt8);
  EXPECT_EQ(ClassifyTensor(Shaped("features.0.weight", {8, 8}), *policy),
            LayerClass::kFloat);
  EXPECT_EQ(ClassifyTensor(Shaped("fc", {10, 10}), *policy),
            LayerClass::kPicture);
  const TierSpec q32 = ParseTier("q32").value();
  const LayerEncodeOptions conv =
      OptionsFor(Shaped("conv", {64, 64, 3, 3}), *policy, q32, {});
  EXPECT_EQ(conv.codec, LayerCodec::kHevc);
  EXPECT_EQ(conv.hevc.qp, 20);  // its own QP
  EXPECT_EQ(OptionsFor(Shaped("fc", {64, 64}), *policy, q32, {}).hevc.qp, 32);
  const TierSpec lossless = ParseTier("lossless").value();
  EXPECT_EQ(
      OptionsFor(Shaped("conv", {64, 64, 3, 3}), *policy, lossless, {}).codec,
      LayerCodec::kZstdInt8);
  EXPECT_THAT(DescribeLayerPolicy(*policy), HasSubstr("picture at QP 20"));
}

TEST(LayerPolicy, BadFilesNameTheField) {
  EXPECT_THAT(std::string(ParseLayerPolicy("[1]").status().message()),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(
      std::string(
          ParseLayerPolicy(R"({"convolution_qp": 60})").status().message()),
      HasSubstr("convolution_qp"));
  EXPECT_THAT(
      std::string(
          ParseLayerPolicy(R"({"convolution_qp": 20})").status().message()),
      HasSubstr("needs"));
  EXPECT_THAT(std::string(ParseLayerPolicy(R"({"overrides": {"x": "jpeg"}})")
                              .status()
                              .message()),
              HasSubstr("overrides.x"));
  EXPECT_THAT(
      std::string(ParseLayerPolicy(R"({"colour": 1})").status().message()),
      HasSubstr("colour"));
}

TEST(LayerPolicy, IntegerTensorsNeverBecomeInt8) {
  LayerPolicy policy;
  policy.overrides.emplace_back("*", LayerClass::kPicture);
  EXPECT_EQ(OptionsFor(Shaped("ids", {128, 128}, DType::kInt64), policy,
                       ParseTier("q27").value(), {})
                .codec,
            LayerCodec::kPassthrough);  // integer data is never quantized,
                                        // whatever the override
  EXPECT_EQ(OptionsFor(Shaped("n", {}, DType::kInt64), LayerPolicy{},
                       ParseTier("q27").value(), {})
                .codec,
            LayerCodec::kPassthrough);
}

}  // namespace
}  // namespace weightcast
