#include <algorithm>
#include <random>

#include "common/hevc/de265_decoder.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

Plane SmoothPlane(int width, int height) {
  Plane plane{width, height,
              std::vector<uint8_t>(static_cast<size_t>(width) * height)};
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> noise(-6, 6);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      plane.pixels[y * width + x] =
          static_cast<uint8_t>(128 + (x + 2 * y) % 40 - 20 + noise(rng));
    }
  }
  return plane;
}

TEST(TilePlan, SplitsEvenlyUnderTheMaximum) {
  TileGrid grid = PlanTiles(4097, 33, 4096);
  EXPECT_EQ(grid.RowTiles(), 2);
  EXPECT_EQ(grid.ColTiles(), 1);
  EXPECT_LE(grid.tile_rows, 4096);
  EXPECT_EQ(grid.Tile(1).row0 + grid.Tile(1).rows, 4097);
  EXPECT_TRUE(ValidateTileGrid(grid, 4096).ok());
  TileGrid small = PlanTiles(3, 5, 4096);
  EXPECT_EQ(small.NumTiles(), 1);
  EXPECT_EQ(small.Tile(0).rows, 3);
}

TEST(TilePlan, CutsTilesToThePixelCapLongerSideFirst) {
  // With a cap of 4 M pixels: a 1 B model's embedding, whose 4000 x 2048
  // tiles would be twice the cap.
  constexpr int64_t k4M = int64_t{4096} * 1024;
  TileGrid embedding = PlanTiles(32000, 2048, kDefaultMaxTileSize, k4M);
  EXPECT_EQ(embedding.tile_rows, 2000);
  EXPECT_EQ(embedding.tile_cols, 2048);
  EXPECT_EQ(embedding.NumTiles(), 16);
  // Within the cap already (a 0.35 B model's embedding): as without one.
  TileGrid narrow = PlanTiles(32000, 1024, kDefaultMaxTileSize, k4M);
  EXPECT_EQ(narrow.tile_rows, 4000);
  EXPECT_EQ(narrow.NumTiles(), 8);
  // Wider than tall: the columns are cut.
  TileGrid wide = PlanTiles(2048, 5632, kDefaultMaxTileSize, k4M);
  EXPECT_EQ(wide.tile_rows, 2048);
  EXPECT_EQ(wide.ColTiles(), 3);
  // The default cap, 1 M pixels: a 2048 x 2048 layer in four strips of rows.
  TileGrid square = PlanTiles(2048, 2048);
  EXPECT_EQ(square.tile_rows, 512);
  EXPECT_EQ(square.tile_cols, 2048);
  EXPECT_EQ(square.NumTiles(), 4);
  for (const TileGrid& grid :
       {PlanTiles(32000, 2048), PlanTiles(32000, 1024), PlanTiles(2048, 5632),
        square, PlanTiles(4096, 4096), PlanTiles(1, 1 << 30),
        PlanTiles(40000, 40000)}) {
    EXPECT_LE(grid.tile_rows * grid.tile_cols, kDefaultMaxTilePixels);
    EXPECT_TRUE(ValidateTileGrid(grid, kDefaultMaxTileSize).ok());
  }
  // A cap below one CTU squared stops at kCtuSize on both sides.
  TileGrid tiny = PlanTiles(100, 100, 4096, 10);
  EXPECT_EQ(tiny.tile_rows, kCtuSize);
  EXPECT_EQ(tiny.tile_cols, kCtuSize);
}

TEST(TilePlan, ValidateRejectsNonsense) {
  EXPECT_FALSE(ValidateTileGrid(TileGrid{10, 10, 0, 10}, 4096).ok());
  EXPECT_FALSE(ValidateTileGrid(TileGrid{10, 10, 11, 10}, 4096).ok());
  EXPECT_FALSE(ValidateTileGrid(TileGrid{1 << 20, 10, 8192, 10}, 4096).ok());
}

TEST(Picture, PaddingReplicatesEdgesAndNeverLeaks) {
  const std::vector<int8_t> m = {1, 2, 3, -4, -5, -6};  // 2 x 3
  Plane plane = ExtractTile(m, 3, TileRect{0, 0, 2, 3});
  EXPECT_EQ(plane.width, kCtuSize);
  EXPECT_EQ(plane.height, kCtuSize);
  EXPECT_EQ(plane.pixels[0], 129);
  EXPECT_EQ(plane.pixels[kCtuSize - 1], 131);  // right edge replicates 3
  EXPECT_EQ(plane.pixels[(kCtuSize - 1) * kCtuSize],
            124);  // bottom edge replicates -4
  std::vector<int8_t> back(6, 99);
  InsertTile(plane, TileRect{0, 0, 2, 3}, 3, absl::MakeSpan(back));
  EXPECT_EQ(back, m);
}

TEST(Picture, MatrixViewFlattensTrailingDimensions) {
  using RowsCols = std::pair<int64_t, int64_t>;
  EXPECT_EQ(MatrixView({64, 3, 3, 3}), RowsCols(64, 27));
  EXPECT_EQ(MatrixView({10}), RowsCols(1, 10));
  EXPECT_EQ(MatrixView({}), RowsCols(1, 1));
}

TEST(Hevc, LosslessIsBitExact) {
  const Plane plane = SmoothPlane(64, 40);
  auto bitstream = EncodeIntraPicture(
      plane, {.qp = 0, .lossless = true, .preset = "ultrafast"});
  ASSERT_TRUE(bitstream.ok()) << bitstream.status();
  auto decoded = DecodeIntraPicture(*bitstream, 64, 40);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->pixels, plane.pixels);
}

TEST(Hevc, HigherQpGivesFewerBytesAndMoreError) {
  const Plane plane = SmoothPlane(128, 96);
  size_t last_bytes = SIZE_MAX;
  double last_error = -1;
  for (int qp : {22, 32, 42}) {
    auto bitstream = EncodeIntraPicture(plane, {.qp = qp});
    ASSERT_TRUE(bitstream.ok()) << bitstream.status();
    auto decoded = DecodeIntraPicture(*bitstream, 128, 96);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    double error = 0;
    for (size_t i = 0; i < plane.pixels.size(); ++i) {
      const double d = double(plane.pixels[i]) - decoded->pixels[i];
      error += d * d;
    }
    EXPECT_LT(bitstream->size(), last_bytes) << "qp " << qp;
    EXPECT_GT(error, last_error) << "qp " << qp;
    last_bytes = bitstream->size();
    last_error = error;
  }
}

// Weights-like pictures: Gaussian values around 128 (an int8 matrix + 128), and
// a "fine-tuned" copy where a fraction of the values moved by a small step.
Plane GaussianPlane(int width, int height, uint32_t seed) {
  Plane plane{width, height,
              std::vector<uint8_t>(static_cast<size_t>(width) * height)};
  std::mt19937 rng(seed);
  std::normal_distribution<double> value(128, 20);
  for (uint8_t& p : plane.pixels)
    p = static_cast<uint8_t>(std::clamp(std::lround(value(rng)), 0L, 255L));
  return plane;
}

Plane Nudged(const Plane& plane, double fraction, uint32_t seed) {
  Plane out = plane;
  std::mt19937 rng(seed);
  std::bernoulli_distribution moved(fraction);
  std::uniform_int_distribution<int> step(-2, 2);
  for (uint8_t& p : out.pixels) {
    if (moved(rng)) p = static_cast<uint8_t>(std::clamp(p + step(rng), 0, 255));
  }
  return out;
}

std::vector<uint8_t> Concat(
    std::initializer_list<const std::vector<uint8_t>*> parts) {
  std::vector<uint8_t> out;
  for (const auto* part : parts)
    out.insert(out.end(), part->begin(), part->end());
  return out;
}

TEST(HevcSequence, FirstPictureIsCodedExactlyAsTheIntraPicture) {
  const Plane a = GaussianPlane(128, 64, 1);
  for (int qp : {22, 32}) {
    const HevcEncodeOptions options{.qp = qp};
    const std::vector<uint8_t> intra = EncodeIntraPicture(a, options).value();
    const HevcSequence split = SplitParameterSets(intra);
    ASSERT_EQ(split.pictures.size(), 1u);
    EXPECT_EQ(Concat({&split.parameter_sets, &split.pictures[0]}), intra);
    const Plane b = Nudged(a, 0.2, 2);
    auto sequence = EncodeSequence({&a, &b}, {}, options);
    ASSERT_TRUE(sequence.ok()) << sequence.status();
    ASSERT_EQ(sequence->pictures.size(), 2u);
    EXPECT_EQ(sequence->pictures[0], split.pictures[0]) << "qp " << qp;
  }
  // Per-picture QPs: a picture forced to QP 32 is the intra picture at 32.
  auto forced = EncodeSequence({&a}, {32}, {.qp = 22});
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->pictures[0],
            SplitParameterSets(EncodeIntraPicture(a, {.qp = 32}).value())
                .pictures[0]);
}

TEST(HevcSequence, APPictureDecodesAgainstTheStoredIntraPictureBitExactly) {
  const Plane a = GaussianPlane(256, 128, 3);
  const Plane b = Nudged(a, 0.1, 4);
  const HevcEncodeOptions options{.qp = 27};
  const std::vector<uint8_t> intra_a = EncodeIntraPicture(a, options).value();
  const HevcSequence sequence = EncodeSequence({&a, &b}, {}, options).value();
  // What a device holds (A's intra bitstream) + what it is sent (parameter sets
  // + P picture).
  const HevcSequence held = SplitParameterSets(intra_a);
  const std::vector<uint8_t> stitched = Concat(
      {&sequence.parameter_sets, &held.pictures[0], &sequence.pictures[1]});
  auto decoded = DecodeSequence(stitched, 256, 128, 2);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->size(), 2u);
  const std::vector<uint8_t> whole = Concat(
      {&sequence.parameter_sets, &sequence.pictures[0], &sequence.pictures[1]});
  auto reference = DecodeSequence(whole, 256, 128, 2);
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ((*decoded)[0].pixels,
            DecodeIntraPicture(intra_a, 256, 128).value().pixels);
  EXPECT_EQ((*decoded)[1].pixels, (*reference)[1].pixels);
  // The P picture costs a fraction of B coded on its own.
  const size_t intra_b = EncodeIntraPicture(b, options).value().size();
  EXPECT_LT(sequence.pictures[1].size() * 2, intra_b)
      << sequence.pictures[1].size() << " vs " << intra_b;
  // Against another base the P picture decodes to something else: libde265 does
  // not know the base was wrong, so callers check the base's digest before and
  // the result's after.
  const Plane other = GaussianPlane(256, 128, 5);
  const HevcSequence wrong =
      SplitParameterSets(EncodeIntraPicture(other, options).value());
  const std::vector<uint8_t> misapplied = Concat(
      {&sequence.parameter_sets, &wrong.pictures[0], &sequence.pictures[1]});
  auto garbage = DecodeSequence(misapplied, 256, 128, 2);
  ASSERT_TRUE(garbage.ok()) << garbage.status();
  EXPECT_NE((*garbage)[1].pixels, (*reference)[1].pixels);
}

TEST(Hevc, EncoderRejectsBadOptions) {
  const Plane plane = SmoothPlane(32, 32);
  EXPECT_THAT(
      std::string(EncodeIntraPicture(plane, {.qp = 60}).status().message()),
      HasSubstr("QP 60"));
  EXPECT_THAT(
      std::string(
          EncodeIntraPicture(plane, {.preset = "warp"}).status().message()),
      HasSubstr("warp"));
  EXPECT_FALSE(
      EncodeIntraPicture(Plane{20, 32, std::vector<uint8_t>(640)}, {}).ok());
}

// Coding tools pass through to x265 (a picture without SAO and deblocking is
// coded differently and still decodes); anything else is refused by name.
TEST(Hevc, EncoderTakesCodingToolsAndOnlyThose) {
  const Plane plane = GaussianPlane(64, 64, 3);
  auto plain = EncodeIntraPicture(plane, {.qp = 32});
  auto tooled = EncodeIntraPicture(
      plane, {.qp = 32, .tools = {"no-sao", "no-deblock", "rdoq-level=1"}});
  ASSERT_TRUE(plain.ok() && tooled.ok()) << tooled.status();
  EXPECT_NE(*plain, *tooled);
  EXPECT_TRUE(DecodeIntraPicture(*tooled, 64, 64).ok());
  EXPECT_THAT(std::string(EncodeIntraPicture(plane, {.tools = {"csv=/tmp/x"}})
                              .status()
                              .message()),
              HasSubstr("'csv'"));
  EXPECT_THAT(std::string(EncodeIntraPicture(plane, {.tools = {"rd=banana"}})
                              .status()
                              .message()),
              HasSubstr("refused the tool 'rd=banana'"));
  EXPECT_TRUE(IsX265Tool("no-sao"));
  EXPECT_FALSE(IsX265Tool("qp"));
}

TEST(Hevc, DecoderRejectsWrongSizeAndGarbage) {
  const Plane plane = SmoothPlane(64, 64);
  auto bitstream = EncodeIntraPicture(plane, {.qp = 27, .preset = "ultrafast"});
  ASSERT_TRUE(bitstream.ok());
  EXPECT_EQ(DecodeIntraPicture(*bitstream, 64, 32).status().code(),
            absl::StatusCode::kDataLoss);
  std::vector<uint8_t> garbage(500, 0x5a);
  EXPECT_EQ(DecodeIntraPicture(garbage, 64, 64).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeIntraPicture({}, 64, 64).status().code(),
            absl::StatusCode::kDataLoss);
}

// Fuzz-style: every truncation and many bit flips of a real bitstream give an
// error or a picture of the expected size; never a crash (this runs under ASan
// with scripts/test --asan).
TEST(Hevc, TruncatedAndBitFlippedBitstreamsNeverCrash) {
  const Plane plane = SmoothPlane(96, 64);
  auto bitstream = EncodeIntraPicture(plane, {.qp = 27, .preset = "ultrafast"});
  ASSERT_TRUE(bitstream.ok());
  int errors = 0;
  for (size_t length = 0; length < bitstream->size(); length += 7) {
    auto decoded = DecodeIntraPicture(
        absl::MakeConstSpan(bitstream->data(), length), 96, 64);
    if (decoded.ok()) {
      EXPECT_EQ(decoded->pixels.size(), 96u * 64u);
    } else {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> damaged = *bitstream;
    for (int flips = 0; flips < 1 + trial % 4; ++flips) {
      damaged[rng() % damaged.size()] ^=
          static_cast<uint8_t>(1u << (rng() % 8));
    }
    auto decoded = DecodeIntraPicture(damaged, 96, 64);
    if (decoded.ok()) {
      EXPECT_EQ(decoded->pixels.size(), 96u * 64u);
    }
  }
}

}  // namespace
}  // namespace weightcast
