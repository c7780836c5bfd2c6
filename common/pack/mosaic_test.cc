// The mosaic layout (mosaic.h): its plan, its round trip, and layers coded
// with one through EncodeLayer, their bytes and DecodeLayer (format version 4).
#include "common/pack/mosaic.h"

#include <cmath>
#include <random>

#include "common/pack/layer_codec.h"
#include "common/pack/layer_policy.h"
#include "common/pack/layer_tiles.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

TEST(Mosaic, PlansANearSquarePictureOfWholeBlocks) {
  // mlp's fc1: 1024 rows of one 28x28 image each -> 32 x 32 blocks.
  const MosaicPicture mlp = PlanMosaic(1024, 784, {28, 28}).value();
  EXPECT_EQ(mlp.grid_cols, 32);
  EXPECT_EQ(mlp.rows, 896);
  EXPECT_EQ(mlp.cols, 896);
  // fc_cnn's fc1: 32 channels of 7x7 per row -> 32768 blocks, 182 a row.
  const MosaicPicture cnn = PlanMosaic(1024, 1568, {7, 7}).value();
  EXPECT_GE(cnn.cols, cnn.rows);
  EXPECT_LT((cnn.grid_cols - 1) * 7,
            ((32768 + cnn.grid_cols - 2) / (cnn.grid_cols - 1)) * 7);
  EXPECT_GE(cnn.grid_cols * (cnn.rows / 7), 32768);
  // Three blocks of 2x3 in a row: as wide as high needs two a row.
  const MosaicPicture small = PlanMosaic(3, 6, {2, 3}).value();
  EXPECT_EQ(small.grid_cols, 2);
  EXPECT_EQ(small.rows, 4);
  EXPECT_EQ(small.cols, 6);
}

TEST(Mosaic, RefusesBlocksThatDoNotFit) {
  EXPECT_THAT(std::string(PlanMosaic(10, 784, {28, 27}).status().message()),
              HasSubstr("does not fit a 10x784 matrix"));
  EXPECT_FALSE(PlanMosaic(10, 784, {1, 784}).ok());
  EXPECT_FALSE(PlanMosaic(10, 8, {0, 0}).ok());
  EXPECT_FALSE(PlanMosaic(0, 8, {2, 2}).ok());
  EXPECT_FALSE(
      PlanMosaic(1, 2 * (kMaxMosaicBlockSide + 1), {2, kMaxMosaicBlockSide + 1})
          .ok());
}

TEST(Mosaic, PlacesEachBlockAsItsImageAndComesBack) {
  // Two rows of two 2x2 blocks: values r*8 + c.
  std::vector<int8_t> matrix(16);
  for (int i = 0; i < 16; ++i) matrix[i] = static_cast<int8_t>(i);
  const Mosaic mosaic{2, 2};
  const MosaicPicture picture = PlanMosaic(2, 8, mosaic).value();
  ASSERT_EQ(picture.grid_cols, 2);
  const std::vector<int8_t> laid = ToMosaic(matrix, 8, mosaic, picture);
  // Row 0's first block is [0 1; 2 3], its second [4 5; 6 7], side by side.
  const std::vector<int8_t> expected = {0, 1, 4,  5,  2,  3,  6,  7,
                                        8, 9, 12, 13, 10, 11, 14, 15};
  EXPECT_EQ(laid, expected);
  EXPECT_EQ(FromMosaic(laid, 2, 8, mosaic, picture), matrix);

  // Random sizes with a partial last grid row (zeros there).
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> value(-127, 127);
  const Mosaic blocks{3, 5};
  const MosaicPicture odd = PlanMosaic(7, 30, blocks).value();
  std::vector<int8_t> values(7 * 30);
  for (int8_t& v : values) v = static_cast<int8_t>(value(rng));
  const std::vector<int8_t> picture_values = ToMosaic(values, 30, blocks, odd);
  ASSERT_EQ(picture_values.size(), static_cast<size_t>(odd.rows * odd.cols));
  EXPECT_EQ(FromMosaic(picture_values, 7, 30, blocks, odd), values);
}

// Smooth 8x8 images per row plus noise: what a first layer on images holds.
Tensor ImageRows(int64_t rows) {
  std::mt19937 rng(9);
  std::normal_distribution<float> noise(0.0f, 0.2f);
  std::vector<float> values;
  for (int64_t r = 0; r < rows; ++r) {
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        values.push_back(std::sin(0.4f * x + 0.1f * r) *
                             std::cos(0.5f * y - 0.2f * r) +
                         noise(rng));
  }
  return MakeFloat32Tensor("fc1.weight", {rows, 64}, values);
}

LayerEncodeOptions HevcWithMosaic(int qp, bool lossless, Mosaic mosaic) {
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.hevc = {qp, lossless, "ultrafast"};
  options.max_tile_size = 64;  // the 112 x 112 picture in 2 x 2 tiles
  options.mosaic = mosaic;
  return options;
}

PackedLayer Parsed(const std::vector<uint8_t>& bytes) {
  size_t consumed = 0;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(consumed, bytes.size());
  return parsed.ok() ? *parsed : PackedLayer();
}

TEST(Mosaic, ALayerCodedAsItsMosaicDecodesToTheSameInt8Values) {
  const Tensor w = ImageRows(192);
  const PackedLayer plain =
      EncodeLayer(w, HevcWithMosaic(0, /*lossless=*/true, {})).value();
  const PackedLayer laid =
      EncodeLayer(w, HevcWithMosaic(0, /*lossless=*/true, {8, 8})).value();
  EXPECT_EQ(laid.mosaic, (Mosaic{8, 8}));
  EXPECT_EQ(laid.grid.rows, 112);  // 192 blocks, 14 a row
  EXPECT_EQ(laid.grid.cols, 112);
  EXPECT_EQ(laid.tiles.size(), 4u);
  // Lossless: the same int8 values either way, so the same digest.
  EXPECT_EQ(laid.decoded_sha256, plain.decoded_sha256);
  const std::vector<uint8_t> bytes = SerializePackedLayer(laid);
  const PackedLayer parsed = Parsed(bytes);
  EXPECT_EQ(parsed.mosaic, laid.mosaic);
  EXPECT_EQ(SerializePackedLayer(parsed), bytes);  // byte for byte
  EXPECT_FALSE(DecodesByTile(parsed));             // decoded whole
  const RebuiltTensor back = DecodeLayer(parsed).value();
  EXPECT_EQ(back.int8->values, DecodeLayer(plain).value().int8->values);
  // A plain layer stays format version 1, byte for byte without the fields.
  EXPECT_TRUE(Parsed(SerializePackedLayer(plain)).mosaic.empty());
}

TEST(Mosaic, LossyLayersDecodeAndCheckTheirDigest) {
  const Tensor w = ImageRows(192);
  const PackedLayer laid =
      EncodeLayer(w, HevcWithMosaic(30, false, {8, 8})).value();
  const PackedLayer plain =
      EncodeLayer(w, HevcWithMosaic(30, false, {})).value();
  const RebuiltTensor back = DecodeLayer(Parsed(SerializePackedLayer(laid)))
                                 .value();  // its digest checked
  EXPECT_EQ(back.shape, w.shape);
  // Smooth images: the mosaic codes them at least as well per byte here.
  EXPECT_GT(laid.fidelity.sqnr_db, 0.0);
  EXPECT_GT(plain.fidelity.sqnr_db, 0.0);
  // The rows path refuses a mosaic (it needs the whole tensor).
  const Tensor header{w.name, w.shape, w.dtype, {}};
  const FloatRowReader rows =
      [&](int64_t first, int64_t count) -> absl::StatusOr<std::vector<float>> {
    const std::vector<float> all = ToFloat32(w).value();
    return std::vector<float>(all.begin() + first * 64,
                              all.begin() + (first + count) * 64);
  };
  EXPECT_THAT(std::string(EncodeLayerFromRows(header, rows,
                                              HevcWithMosaic(30, false, {8, 8}))
                              .status()
                              .message()),
              HasSubstr("whole tensor"));
}

TEST(Mosaic, AReaderRefusesAMosaicThatDoesNotFitItsLayer) {
  const PackedLayer good =
      EncodeLayer(ImageRows(192), HevcWithMosaic(30, false, {8, 8})).value();
  auto parse = [](const PackedLayer& layer) {
    size_t consumed = 0;
    return ParsePackedLayer(SerializePackedLayer(layer), &consumed).status();
  };
  ASSERT_TRUE(parse(good).ok());
  PackedLayer misfit = good;
  misfit.mosaic = {8, 7};
  EXPECT_THAT(std::string(parse(misfit).message()), HasSubstr("does not fit"));
  PackedLayer other_grid = good;
  other_grid.mosaic = {2, 32};  // fits the matrix: a 96 x 128 picture
  EXPECT_THAT(std::string(parse(other_grid).message()),
              HasSubstr("does not match"));
  PackedLayer on_zstd = good;
  on_zstd.codec = LayerCodec::kZstdInt8;
  on_zstd.tiles = {std::vector<uint8_t>(8)};
  EXPECT_THAT(std::string(parse(on_zstd).message()), HasSubstr("a mosaic"));
}

TEST(Mosaic, ThePolicyNamesTheLayersAndSkipsOnesItDoesNotFit) {
  EXPECT_THAT(std::string(ParseLayerPolicy(R"({"mosaics": {"fc1.weight": 28}})")
                              .status()
                              .message()),
              HasSubstr("mosaics.fc1.weight"));
  EXPECT_FALSE(ParseLayerPolicy(R"({"mosaics": {"a": [1, 28]}})").ok());
  EXPECT_FALSE(ParseLayerPolicy(R"({"mosaics": {"a": [28, 28, 1]}})").ok());
  EXPECT_FALSE(ParseLayerPolicy(R"({"mosaics": [28, 28]})").ok());
  const LayerPolicy policy =
      ParseLayerPolicy(R"({"mosaics": {"fc1.weight": [8, 8], "fc2*": [5, 5]}})")
          .value();
  EXPECT_THAT(DescribeLayerPolicy(policy), HasSubstr("fc1.weight -> mosaic"));
  const TierSpec tier = ParseTier("q30").value();
  EXPECT_EQ(OptionsFor(ImageRows(4096 / 64), policy, tier, {}).mosaic,
            (Mosaic{8, 8}));
  // fc2 matches "fc2*", whose 5x5 blocks do not divide its 64 columns.
  Tensor fc2 = ImageRows(4096 / 64);
  fc2.name = "fc2.weight";
  EXPECT_TRUE(OptionsFor(fc2, policy, tier, {}).mosaic.empty());
  // Not a picture in the lossless tier's zstd codec: no mosaic.
  EXPECT_TRUE(
      OptionsFor(ImageRows(64), policy, ParseTier("lossless").value(), {})
          .mosaic.empty());
}

// Rows of `channels` smooth side x side images each (smoother down than
// across), every row with its own phases: a first layer on images, as
// FindMosaic sees one.
std::vector<float> IndependentImageRows(int64_t rows, int side, int channels) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> phase(0.0f, 6.3f);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  std::vector<float> values;
  for (int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < channels; ++c) {
      const float a = phase(rng), b = phase(rng);
      for (int y = 0; y < side; ++y)
        for (int x = 0; x < side; ++x)
          values.push_back(std::sin(0.7f * x + a) * std::cos(0.3f * y + b) +
                           noise(rng));
    }
  }
  return values;
}

TEST(Mosaic, FoundWhereTheRowsHoldImagesAndNowhereElse) {
  // Two 12x12 images a row: 288 columns, blocks of 12 x 12.
  EXPECT_EQ(FindMosaic(512, 288, IndependentImageRows(512, 12, 2)),
            (Mosaic{12, 12}));
  // Independent weights; rows smooth along themselves (a peak at lag 1, not
  // at an image's width); rows that repeat their neighbours (the matrix
  // picture already predicts them).
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> iid(512 * 288), smooth(512 * 288), repeated(512 * 288);
  for (float& v : iid) v = normal(rng);
  for (size_t i = 0; i < smooth.size(); ++i)  // each row a random walk
    smooth[i] = (i % 288 ? 0.95f * smooth[i - 1] : 0.0f) + normal(rng);
  const std::vector<float> images = IndependentImageRows(8, 12, 2);
  for (size_t i = 0; i < repeated.size(); ++i)
    repeated[i] = images[i % 288] + 0.05f * normal(rng);
  EXPECT_TRUE(FindMosaic(512, 288, iid).empty());
  EXPECT_TRUE(FindMosaic(512, 288, smooth).empty());
  EXPECT_TRUE(FindMosaic(512, 288, repeated).empty());
  // Too few values to look at, or values that do not fill the matrix.
  EXPECT_TRUE(FindMosaic(1, 6, std::vector<float>(6, 1.0f)).empty());
  EXPECT_TRUE(FindMosaic(512, 288, std::vector<float>(10)).empty());
}

// A policy's "auto": the encoder finds the mosaic in the layer's values and
// codes it; the layer decodes to what its matrix picture does.
TEST(Mosaic, ThePolicysAutoCodesTheMosaicTheWeightsShow) {
  EXPECT_FALSE(ParseLayerPolicy(R"({"mosaics": {"a": "always"}})").ok());
  const LayerPolicy policy =
      ParseLayerPolicy(R"({"mosaics": {"fc*": "auto"}})").value();
  EXPECT_THAT(DescribeLayerPolicy(policy),
              HasSubstr("fc* -> a mosaic where the weights show one"));
  const Tensor w = MakeFloat32Tensor("fc1.weight", {512, 288},
                                     IndependentImageRows(512, 12, 2));
  LayerEncodeOptions base;
  base.hevc.preset = "ultrafast";
  const LayerEncodeOptions lossless =
      OptionsFor(w, policy, ParseTier("hevc-lossless").value(), base);
  EXPECT_TRUE(lossless.find_mosaic);
  EXPECT_TRUE(lossless.mosaic.empty());
  const PackedLayer found =
      Parsed(SerializePackedLayer(EncodeLayer(w, lossless).value()));
  EXPECT_EQ(found.mosaic, (Mosaic{12, 12}));
  LayerEncodeOptions matrix = lossless;
  matrix.find_mosaic = false;
  const PackedLayer plain = EncodeLayer(w, matrix).value();
  EXPECT_TRUE(plain.mosaic.empty());
  EXPECT_EQ(found.decoded_sha256, plain.decoded_sha256);
  // Where the weights show none, the layer is its matrix.
  const Tensor other = MakeFloat32Tensor("fc2.weight", {64, 64},
                                         std::vector<float>(64 * 64, 0.5f));
  EXPECT_TRUE(EncodeLayer(other, OptionsFor(other, policy,
                                            ParseTier("q30").value(), base))
                  .value()
                  .mosaic.empty());
}

}  // namespace
}  // namespace weightcast
