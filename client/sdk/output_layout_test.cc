// The streamed output's layout from a manifest, without a server.
#include "client/sdk/output_layout.h"

#include "gtest/gtest.h"

namespace weightcast {
namespace {

ModelInfo Described() {
  ModelInfo info;
  info.tensor_list = {{"conv.weight", {8, 3, 3, 3}, "float32", "picture"},
                      {"fc.weight", {10, 32}, "bfloat16", "int8"},
                      {"bn.running_var", {8}, "float16", "passthrough"},
                      {"bn.num_batches_tracked", {}, "int64", "passthrough"}};
  return info;
}

v1::Manifest Sent() {
  v1::Manifest manifest;
  const auto add = [&](const char* name, v1::LayerCodec codec, int index,
                       v1::QuantScheme scheme) {
    v1::ManifestLayer* layer = manifest.add_layers();
    layer->set_name(name);
    layer->set_codec(codec);
    layer->set_tensor_index(index);
    layer->set_quant_scheme(scheme);
  };
  // Out of tensor order, as a refinement or a delta may send them.
  add("fc.weight", v1::LAYER_CODEC_ZSTD_INT8, 1,
      v1::QUANT_SCHEME_PER_TENSOR_ASYMMETRIC);
  add("conv.weight", v1::LAYER_CODEC_HEVC, 0,
      v1::QUANT_SCHEME_PER_CHANNEL_SYMMETRIC);
  add("bn.running_var", v1::LAYER_CODEC_PASSTHROUGH, 2,
      v1::QUANT_SCHEME_UNSPECIFIED);
  add("bn.num_batches_tracked", v1::LAYER_CODEC_PASSTHROUGH, 3,
      v1::QUANT_SCHEME_UNSPECIFIED);
  return manifest;
}

TEST(OutputLayout, FloatOutputsWidenEveryFloatLayer) {
  auto layout = OutputLayout(Sent(), Described(), OutputKind::kFloat);
  ASSERT_TRUE(layout.ok()) << layout.status();
  ASSERT_EQ(layout->size(), 4u);
  EXPECT_EQ((*layout)[0].name, "conv.weight");
  EXPECT_EQ((*layout)[0].bytes, 8u * 27 * 4);
  EXPECT_EQ((*layout)[1].dtype, DType::kFloat32);
  EXPECT_EQ((*layout)[2].dtype, DType::kFloat32);  // float16 passthrough
  EXPECT_EQ((*layout)[3].dtype, DType::kInt64);
}

TEST(OutputLayout, Int8OutputsGetScalesAsTheSchemeSizesThem) {
  auto layout = OutputLayout(Sent(), Described(), OutputKind::kInt8);
  ASSERT_TRUE(layout.ok()) << layout.status();
  std::vector<std::string> names;
  for (const TensorLayout& t : *layout) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "conv.weight", "conv.weight.__scale__", "fc.weight",
                       "fc.weight.__scale__", "fc.weight.__zero_point__",
                       "bn.running_var", "bn.num_batches_tracked"}));
  EXPECT_EQ((*layout)[0].dtype, DType::kInt8);
  EXPECT_EQ((*layout)[0].bytes, 8u * 27);
  EXPECT_EQ((*layout)[1].shape, std::vector<int64_t>{8});  // per channel
  EXPECT_EQ((*layout)[3].shape, std::vector<int64_t>{1});  // per tensor
  EXPECT_EQ((*layout)[4].dtype, DType::kInt32);
  EXPECT_EQ((*layout)[5].dtype, DType::kFloat16);  // as stored
}

TEST(OutputLayout, AnInt8LayerWithoutItsSchemeIsNotLaidOut) {
  // A server before ManifestLayer.quant_scheme: the caller writes the whole
  // model at the end instead.
  v1::Manifest manifest = Sent();
  manifest.mutable_layers(0)->set_quant_scheme(v1::QUANT_SCHEME_UNSPECIFIED);
  EXPECT_EQ(
      OutputLayout(manifest, Described(), OutputKind::kInt8).status().code(),
      absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(OutputLayout(manifest, Described(), OutputKind::kFloat).ok());
}

TEST(OutputLayout, ALayerThatIsNotTheDescribedTensorIsNotLaidOut) {
  v1::Manifest manifest = Sent();
  manifest.mutable_layers(1)->set_tensor_index(7);
  EXPECT_EQ(
      OutputLayout(manifest, Described(), OutputKind::kFloat).status().code(),
      absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace weightcast
