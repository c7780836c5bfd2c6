// Activation-aware column weighting (issue 21): the packed layer's column
// scales, format version 3, through EncodeLayer, DecodeLayer and the outputs.
#include <cmath>
#include <random>

#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/fidelity.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kRows = 96, kCols = 80;

std::vector<float> Gaussian(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(kRows * kCols);
  for (float& v : values) v = normal(rng);
  return values;
}

// The first half of the columns weighted 8, the rest 1/8 (as inputs 64^2
// times apart in RMS would be at alpha 0.5).
std::vector<float> HalfAndHalf() {
  std::vector<float> scales(kCols, 0.125f);
  std::fill(scales.begin(), scales.begin() + kCols / 2, 8.0f);
  return scales;
}

LayerEncodeOptions Hevc(int qp) {
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.hevc = {.qp = qp, .lossless = false, .preset = "ultrafast"};
  options.max_tile_size = 64;  // 2 x 2 tiles
  return options;
}

// Mean squared error of the decoded float values over columns [begin, end).
double ColumnMse(const std::vector<float>& original,
                 const std::vector<float>& decoded, int64_t begin,
                 int64_t end) {
  double sum = 0;
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t c = begin; c < end; ++c) {
      const double d = original[r * kCols + c] - decoded[r * kCols + c];
      sum += d * d;
    }
  }
  return sum / (kRows * (end - begin));
}

std::vector<float> DecodedFloats(const PackedLayer& layer) {
  const RebuiltTensor rebuilt = DecodeLayer(layer).value();
  return ToFloat32(rebuilt.ToFloatTensor().value()).value();
}

// At one QP, with per-tensor scales (set by the largest weighted value), the
// columns weighted up keep their error in the weights' units and the others
// take more, in fewer bytes: bytes move to the columns whose inputs matter.
// The layer round-trips through its bytes as format version 3.
TEST(ColumnScales, MoveTheErrorToTheColumnsWeightedLess) {
  const std::vector<float> values = Gaussian(3);
  const Tensor tensor = MakeFloat32Tensor("fc.weight", {kRows, kCols}, values);
  const PackedLayer plain = EncodeLayer(tensor, Hevc(30)).value();
  LayerEncodeOptions options = Hevc(30);
  options.column_scales = HalfAndHalf();
  const PackedLayer weighted = EncodeLayer(tensor, options).value();
  ASSERT_EQ(weighted.column_scales, HalfAndHalf());
  EXPECT_EQ(weighted.source_dtype, DType::kFloat32);

  const std::vector<uint8_t> bytes = SerializePackedLayer(weighted);
  size_t consumed = 0;
  const PackedLayer parsed = ParsePackedLayer(bytes, &consumed).value();
  EXPECT_EQ(consumed, bytes.size());
  EXPECT_EQ(parsed.column_scales, weighted.column_scales);
  EXPECT_EQ(parsed.column_scale_repeat, 1);
  EXPECT_EQ(SerializePackedLayer(parsed), bytes);

  const std::vector<float> a = DecodedFloats(plain), b = DecodedFloats(parsed);
  EXPECT_LT(weighted.PayloadBytes(), plain.PayloadBytes() * 4 / 5);
  EXPECT_LT(ColumnMse(values, b, 0, kCols / 2),
            ColumnMse(values, a, 0, kCols / 2) * 1.1);
  EXPECT_GT(ColumnMse(values, b, kCols / 2, kCols),
            ColumnMse(values, a, kCols / 2, kCols) * 4);
  // The recorded fidelity is the float output's against the tensor.
  EXPECT_NEAR(weighted.fidelity.sqnr_db, SqnrDb(values, b), 1e-9);
  EXPECT_GT(weighted.fidelity.bits_per_weight,
            8.0 * weighted.PayloadBytes() / values.size());  // + the scales
}

// An int8 output holds the float output quantized again per channel: an int8
// model a runtime can use without knowing the scales.
TEST(ColumnScales, TheInt8OutputIsTheFloatOutputRequantizedPerChannel) {
  const std::vector<float> values = Gaussian(4);
  LayerEncodeOptions options = Hevc(27);
  options.codec = LayerCodec::kZstdInt8;
  options.column_scales.assign(kCols / 4, 2.0f);
  options.column_scales[3] = 0.5f;
  options.column_scale_repeat = 4;  // a convolution's kernel positions
  const PackedLayer layer =
      EncodeLayer(MakeFloat32Tensor("conv.weight", {kRows, 20, 2, 2}, values),
                  options)
          .value();
  const RebuiltTensor rebuilt = DecodeLayer(layer).value();
  const std::vector<float> floats =
      ToFloat32(rebuilt.ToFloatTensor().value()).value();
  const QuantizedTensor int8 = rebuilt.Int8Output().value();
  EXPECT_EQ(int8.scheme, QuantScheme::kPerChannelSymmetric);
  ASSERT_EQ(int8.scales.size(), static_cast<size_t>(kRows));
  const std::vector<float> back = Dequantize(int8);
  for (size_t i = 0; i < floats.size(); ++i) {
    ASSERT_NEAR(back[i], floats[i], int8.scales[i / kCols] / 2 + 1e-7) << i;
  }
  // zstd-int8 is exact in the scaled domain: only int8 rounding remains.
  EXPECT_GT(layer.fidelity.sqnr_db, 30);
}

TEST(ColumnScales, BadScalesAreRefusedNamingTheTensor) {
  const Tensor tensor =
      MakeFloat32Tensor("fc.weight", {kRows, kCols}, Gaussian(5));
  LayerEncodeOptions options = Hevc(30);
  options.column_scales.assign(kCols - 1, 1.0f);
  EXPECT_THAT(std::string(EncodeLayer(tensor, options).status().message()),
              HasSubstr("fc.weight"));
  options.column_scales.assign(kCols, 1.0f);
  options.column_scales[7] = 0.0f;
  EXPECT_EQ(EncodeLayer(tensor, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.column_scales[7] = 1e9f;  // not a float16 number
  EXPECT_EQ(EncodeLayer(tensor, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.column_scales[7] = 1.0f;
  options.codec = LayerCodec::kFloat16;
  EXPECT_EQ(EncodeLayer(tensor, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.codec = LayerCodec::kHevc;
  const Tensor header{tensor.name, tensor.shape, tensor.dtype, {}};
  EXPECT_THAT(std::string(EncodeLayerFromRows(
                              header, RowsOfValues(Gaussian(5), kCols), options)
                              .status()
                              .message()),
              HasSubstr("whole tensor"));
}

// A reader takes column scales only where they are whole and sound.
TEST(ColumnScales, AHeaderWhoseScalesDoNotFitIsRejected) {
  LayerEncodeOptions options = Hevc(30);
  options.codec = LayerCodec::kZstdInt8;
  options.column_scales = HalfAndHalf();
  const PackedLayer good =
      EncodeLayer(MakeFloat32Tensor("fc.weight", {kRows, kCols}, Gaussian(6)),
                  options)
          .value();
  auto parse = [](const PackedLayer& layer) {
    size_t consumed = 0;
    return ParsePackedLayer(SerializePackedLayer(layer), &consumed).status();
  };
  ASSERT_TRUE(parse(good).ok());
  PackedLayer short_list = good;
  short_list.column_scales.pop_back();
  EXPECT_THAT(std::string(parse(short_list).message()),
              HasSubstr("do not cover 80 columns"));
  PackedLayer repeated = good;
  repeated.column_scale_repeat = 2;
  EXPECT_EQ(parse(repeated).code(), absl::StatusCode::kInvalidArgument);
  PackedLayer huge = good;
  huge.column_scale_repeat = 4294967295;
  EXPECT_EQ(parse(huge).code(), absl::StatusCode::kInvalidArgument);
  PackedLayer zero = good;
  zero.column_scales[0] = 0.0f;
  EXPECT_THAT(std::string(parse(zero).message()),
              HasSubstr("not a positive number"));
  PackedLayer on_floats = good;
  on_floats.codec = LayerCodec::kFloat32;
  on_floats.tiles = {std::vector<uint8_t>(kRows * kCols * 4)};
  EXPECT_THAT(std::string(parse(on_floats).message()),
              HasSubstr("cannot have them"));
}

TEST(ColumnScales, FromInputRms) {
  const std::vector<float> scales =
      ColumnScalesFromInputRms({0.0f, 1.0f, 1.0f, 2.0f}, 0.5);  // mean 1
  ASSERT_EQ(scales.size(), 4u);
  EXPECT_FLOAT_EQ(scales[0], 1.0f / 16);  // a dead input: the floor
  EXPECT_FLOAT_EQ(scales[1], 1.0f);
  EXPECT_FLOAT_EQ(scales[3], std::sqrt(2.0f));
  EXPECT_EQ(ColumnScalesFromInputRms({0.0f, 0.0f}),
            std::vector<float>(2, 1.0f));
}

}  // namespace
}  // namespace weightcast
