#include "common/pack/packed_layer.h"

#include <cmath>
#include <random>

#include "common/pack/layer_codec.h"
#include "common/pack/packed_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

std::vector<uint8_t> SamplePackedLayer() {
  std::vector<float> values(64 * 48);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0, 0.1f);
  for (float& v : values) v = normal(rng);
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.hevc = {30, false, "ultrafast"};
  options.max_tile_size = 32;  // 2 x 2 tiles
  PackedLayer layer =
      EncodeLayer(MakeFloat32Tensor("fc.weight", {64, 48}, values), options)
          .value();
  return SerializePackedLayer(layer);
}

// Deltas name their base by the SHA-256 of its serialization: a parsed layer
// must serialize to the very bytes it was parsed from.
TEST(PackedLayer, ParsedLayerSerializesByteForByte) {
  const std::vector<uint8_t> bytes = SamplePackedLayer();
  size_t consumed = 0;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(SerializePackedLayer(*parsed), bytes);
}

// The fidelity measured when coding stays out of the header (up to 29 bytes a
// layer); a layer from an older writer, which has it, keeps its bytes when
// parsed and serialized again.
TEST(PackedLayer, FidelityIsNotWrittenButAnOlderLayersIsKept) {
  const std::vector<uint8_t> bytes = SamplePackedLayer();
  size_t consumed = 0;
  PackedLayer layer = ParsePackedLayer(bytes, &consumed).value();
  EXPECT_FALSE(layer.fidelity_in_header);
  EXPECT_EQ(layer.fidelity.sqnr_db, 0);

  layer.fidelity_in_header = true;  // as a writer before December 2026
  layer.fidelity.sqnr_db = 21.5;
  layer.fidelity.sqnr_int8_db = INFINITY;
  layer.fidelity.max_abs_error = 0.01;
  const std::vector<uint8_t> older = SerializePackedLayer(layer);
  // Three doubles, fields 15 (a one-byte tag), 16 and 17 (two-byte tags).
  EXPECT_EQ(older.size(), bytes.size() + 9 + 10 + 10);
  auto parsed = ParsePackedLayer(older, &consumed);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->fidelity_in_header);
  EXPECT_EQ(parsed->fidelity.sqnr_db, 21.5);
  EXPECT_EQ(parsed->fidelity.sqnr_int8_db, INFINITY);
  EXPECT_EQ(parsed->fidelity.max_abs_error, 0.01);
  EXPECT_EQ(SerializePackedLayer(*parsed), older);
}

// A layer still arriving: UNAVAILABLE until its header is in, then the header
// and where each tile starts, the same for every longer prefix; the header's
// errors as ParsePackedLayer's, judged against the whole layer's length.
TEST(PackedLayer, HeadOfALayerStillArriving) {
  const std::vector<uint8_t> bytes = SamplePackedLayer();
  size_t consumed = 0;
  const PackedLayer whole = ParsePackedLayer(bytes, &consumed).value();
  const auto prefix = [&](size_t n) {
    return absl::MakeConstSpan(bytes).subspan(0, n);
  };
  EXPECT_TRUE(absl::IsUnavailable(
      ParsePackedLayerHead(prefix(5), bytes.size()).status()));
  const uint64_t header_end = bytes.size() - whole.PayloadBytes();
  EXPECT_TRUE(absl::IsUnavailable(
      ParsePackedLayerHead(prefix(header_end - 1), bytes.size()).status()));
  for (const size_t n : {header_end, header_end + 3, uint64_t{bytes.size()}}) {
    auto head = ParsePackedLayerHead(prefix(n), bytes.size());
    ASSERT_TRUE(head.ok()) << head.status();
    EXPECT_EQ(head->layer.name, "fc.weight");
    EXPECT_EQ(head->offsets.end, bytes.size());
    ASSERT_EQ(head->offsets.starts.size(), 4u);
    uint64_t offset = header_end;
    for (size_t t = 0; t < 4; ++t) {
      EXPECT_EQ(head->offsets.starts[t], offset);
      EXPECT_TRUE(head->layer.tiles[t].empty());
      offset += whole.tiles[t].size();
      EXPECT_EQ(head->offsets.TileEnd(t), offset);
    }
  }
  // Tiles longer than the layer's length.
  EXPECT_EQ(ParsePackedLayerHead(prefix(header_end), bytes.size() - 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_THAT(
      ParsePackedLayerHead(absl::MakeConstSpan(bad_magic).subspan(0, 6), 900)
          .status()
          .message(),
      HasSubstr("magic"));
}

TEST(PackedLayer, RejectsBadMagicAndLyingHeaderLength) {
  std::vector<uint8_t> bytes = SamplePackedLayer();
  size_t consumed;
  std::vector<uint8_t> bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_THAT(
      std::string(ParsePackedLayer(bad_magic, &consumed).status().message()),
      HasSubstr("magic"));
  std::vector<uint8_t> long_header = bytes;
  long_header[7] = 0x7f;  // header length ~2 GB
  EXPECT_THAT(
      std::string(ParsePackedLayer(long_header, &consumed).status().message()),
      HasSubstr("header length"));
}

TEST(PackedLayer, RejectsTileLengthsBeyondThePayload) {
  std::vector<uint8_t> bytes = SamplePackedLayer();
  bytes.resize(bytes.size() - 1);
  size_t consumed;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("fc.weight"));
}

// Fuzz-style: every truncation and random bit flips of a packed layer parse to
// an error or decode to an error or the right shape; nothing crashes (ASan in
// scripts/test --asan).
TEST(PackedLayer, TruncatedAndBitFlippedInputNeverCrashes) {
  const std::vector<uint8_t> bytes = SamplePackedLayer();
  size_t consumed;
  for (size_t length = 0; length < bytes.size(); length += 3) {
    auto parsed =
        ParsePackedLayer(absl::MakeConstSpan(bytes.data(), length), &consumed);
    EXPECT_FALSE(parsed.ok()) << length;
  }
  std::mt19937 rng(9);
  int decoded_ok = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<uint8_t> damaged = bytes;
    for (int flips = 0; flips < 1 + trial % 3; ++flips) {
      damaged[rng() % damaged.size()] ^=
          static_cast<uint8_t>(1u << (rng() % 8));
    }
    auto parsed = ParsePackedLayer(damaged, &consumed);
    if (!parsed.ok()) continue;
    auto decoded = DecodeLayer(*parsed, 1);
    if (decoded.ok()) {
      ++decoded_ok;
      EXPECT_EQ(decoded->int8->values.size(),
                static_cast<size_t>(decoded->int8->shape[0] *
                                    decoded->int8->shape[1]));
    } else {
      EXPECT_THAT(decoded.status().code(),
                  testing::AnyOf(absl::StatusCode::kDataLoss,
                                 absl::StatusCode::kInvalidArgument));
    }
  }
  // A flip in the payload is caught by the SHA-256: only flips in fields that
  // do not change the decoded values (fidelity figures, preset name) can still
  // decode.
  EXPECT_LT(decoded_ok, 400);
}

TEST(PackedModel, RejectsTrailingBytesAndHugeLayerCounts) {
  std::vector<uint8_t> model = {'W', 'C', 'M', '1', 0, 0, 0, 0};
  EXPECT_TRUE(ParsePackedModel(model).ok());
  model.push_back(0);
  EXPECT_THAT(std::string(ParsePackedModel(model).status().message()),
              HasSubstr("trailing"));
  std::vector<uint8_t> huge = {'W', 'C', 'M', '1', 0xff, 0xff, 0xff, 0xff};
  EXPECT_THAT(std::string(ParsePackedModel(huge).status().message()),
              HasSubstr("over the limit"));
}

}  // namespace
}  // namespace weightcast
