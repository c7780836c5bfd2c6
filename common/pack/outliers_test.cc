#include "common/pack/outliers.h"

#include <cmath>
#include <random>

#include "common/pack/delta_codec.h"
#include "common/pack/front_end.h"
#include "common/pack/layer_codec.h"
#include "common/pack/layer_tiles.h"
#include "common/pack/packed_layer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "weightcast/v1/packed_layer.pb.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kRows = 128, kCols = 256;

// N(0, 0.02^2) with `count` weights x20 (at fixed, spread positions).
std::vector<float> Values(int count, uint32_t seed = 4) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(kRows * kCols);
  for (float& v : values) v = normal(rng);
  for (int i = 0; i < count; ++i) {
    float& v = values[(i * 7919 + 13) % values.size()];
    v = (v < 0 ? -1.0f : 1.0f) * (0.12f + std::abs(v)) * 20.0f;
  }
  return values;
}

Tensor Layer(int outliers) {
  return MakeFloat32Tensor("attn.weight", {kRows, kCols}, Values(outliers));
}

PackedLayer Encode(const Tensor& t, LayerCodec codec, QuantScheme scheme,
                   bool outliers, int qp = 27) {
  LayerEncodeOptions options;
  options.codec = codec;
  options.scheme = scheme;
  options.outliers = outliers;
  options.hevc = {.qp = qp, .lossless = false, .preset = "ultrafast"};
  auto layer = EncodeLayer(t, options);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *std::move(layer);
}

PackedLayer Reparsed(const PackedLayer& layer) {
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  size_t consumed = 0;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(consumed, bytes.size());
  return *std::move(parsed);
}

TEST(Outliers, FindsThePlantedWeightsAndNoneInAGaussian) {
  const std::vector<float> values = Values(12);
  const OutlierList found = FindOutliers({kRows, kCols}, values, false);
  ASSERT_EQ(found.indices.size(), 12u);
  for (size_t k = 0; k < found.indices.size(); ++k) {
    EXPECT_GT(std::abs(values[found.indices[k]]), 2.0f);
    if (k > 0) {
      EXPECT_GT(found.indices[k], found.indices[k - 1]);
    }
  }
  EXPECT_TRUE(FindOutliers({kRows, kCols}, Values(0), false).empty());
  EXPECT_TRUE(FindOutliers({kRows, kCols}, Values(0), true).empty());
  // Bounded: at most kMaxOutlierFraction of the weights, the largest ones.
  std::vector<float> heavy = Values(0);
  for (size_t i = 0; i < heavy.size(); i += 50) heavy[i] = 1.0f + i * 1e-6f;
  const OutlierList capped = FindOutliers({kRows, kCols}, heavy, false);
  ASSERT_EQ(capped.indices.size(),
            static_cast<size_t>(kMaxOutlierFraction * heavy.size()));
  EXPECT_EQ(capped.indices.back(), static_cast<int64_t>(heavy.size() - 18));
}

// Every front end on an outlier layer, as zstd-int8 and as HEVC: the side list
// comes back exactly, the float output restores it (float16), the int8 output
// saturates it, and SQNR is no worse than without outliers.
TEST(Outliers, RoundTripsPerFrontEnd) {
  const Tensor t = Layer(8);
  const std::vector<float> original = ToFloat32(t).value();
  for (LayerCodec codec : {LayerCodec::kZstdInt8, LayerCodec::kHevc}) {
    for (QuantScheme scheme : {QuantScheme::kPerTensorSymmetric,
                               QuantScheme::kPerChannelSymmetric}) {
      const PackedLayer plain = Encode(t, codec, scheme, false);
      const PackedLayer coded = Encode(t, codec, scheme, true);
      const PackedLayer layer = Reparsed(coded);
      ASSERT_EQ(layer.outliers.indices.size(), 8u);
      EXPECT_GE(coded.fidelity.sqnr_db, plain.fidelity.sqnr_db)
          << LayerCodecName(codec) << " " << QuantSchemeName(scheme);
      auto rebuilt = DecodeLayer(layer, 1);
      ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
      ASSERT_EQ(rebuilt->outlier_indices, layer.outliers.indices);
      const std::vector<float> floats =
          ToFloat32(rebuilt->ToFloatTensor().value()).value();
      for (size_t k = 0; k < layer.outliers.indices.size(); ++k) {
        const int64_t i = layer.outliers.indices[k];
        EXPECT_EQ(floats[i], HalfToFloat(FloatToHalf(original[i])));
        EXPECT_EQ(std::abs(rebuilt->int8->values[i]), 127);  // saturated
        EXPECT_EQ(rebuilt->int8->values[i] > 0, original[i] > 0);
      }
      EXPECT_NEAR(SqnrDb(original, floats), coded.fidelity.sqnr_db, 0.01);
    }
  }
  // On this layer per-tensor + outliers beats plain per-tensor by far.
  EXPECT_GT(
      Encode(t, LayerCodec::kHevc, QuantScheme::kPerTensorSymmetric, true)
          .fidelity.sqnr_db,
      Encode(t, LayerCodec::kHevc, QuantScheme::kPerTensorSymmetric, false)
              .fidelity.sqnr_db +
          10.0);
}

// The SDK decodes a large layer tile by tile (layer_tiles.h): the same
// tensor as DecodeLayer's, outliers included.
TEST(Outliers, TiledDecodeRestoresThemToo) {
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.outliers = true;
  options.hevc = {.qp = 27, .lossless = false, .preset = "ultrafast"};
  options.max_tile_size = 64;  // 2 x 4 tiles
  const PackedLayer layer = Reparsed(EncodeLayer(Layer(8), options).value());
  ASSERT_TRUE(DecodesByTile(layer));
  ASSERT_TRUE(CheckTiledLayer(layer).ok());
  std::vector<int8_t> values(
      static_cast<size_t>(layer.grid.rows * layer.grid.cols));
  for (size_t t = 0; t < layer.tiles.size(); ++t)
    ASSERT_TRUE(DecodeLayerTile(layer, t, absl::MakeSpan(values)).ok());
  auto tiled = FinishTiledDecode(layer, std::move(values));
  ASSERT_TRUE(tiled.ok()) << tiled.status();
  auto whole = DecodeLayer(layer, 1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(tiled->int8->values, whole->int8->values);
  EXPECT_EQ(tiled->outlier_indices, whole->outlier_indices);
  EXPECT_EQ(tiled->outlier_values, whole->outlier_values);
  EXPECT_EQ(tiled->outlier_indices.size(), 8u);
}

TEST(Outliers, LayerWithoutOutliersStaysFormatVersionOne) {
  const Tensor t = Layer(0);
  const PackedLayer with =
      Encode(t, LayerCodec::kHevc, QuantScheme::kPerTensorSymmetric, true);
  const PackedLayer without =
      Encode(t, LayerCodec::kHevc, QuantScheme::kPerTensorSymmetric, false);
  EXPECT_EQ(SerializePackedLayer(with), SerializePackedLayer(without));
}

TEST(Outliers, ChoiceRule) {
  FrontEndChoice m;
  m.per_tensor_channel_sqnr_db = 20.0;
  m.per_channel_channel_sqnr_db = 38.0;
  m.per_tensor_outliers_channel_sqnr_db = 39.0;
  m.per_channel_outliers_channel_sqnr_db = 41.0;
  // Per-tensor + outliers repairs the layer: one scale.
  EXPECT_EQ(OutliersWin(QuantScheme::kPerChannelSymmetric, m, true, true),
            QuantScheme::kPerTensorSymmetric);
  // Without per-tensor candidate: per-channel is transparent, nothing more.
  EXPECT_EQ(OutliersWin(QuantScheme::kPerChannelSymmetric, m, false, true),
            std::nullopt);
  // A transparent per-tensor layer changes only for more than two bits.
  m.per_tensor_channel_sqnr_db = 29.9;
  EXPECT_EQ(OutliersWin(QuantScheme::kPerTensorSymmetric, m, true, true),
            std::nullopt);
  m.per_tensor_channel_sqnr_db = 23.06;  // outlier columns: 37.08 with them
  m.per_tensor_outliers_channel_sqnr_db = 37.08;
  m.per_channel_outliers_channel_sqnr_db = 40.33;
  EXPECT_EQ(OutliersWin(QuantScheme::kPerTensorSymmetric, m, true, true),
            QuantScheme::kPerTensorSymmetric);
  // Per-channel scales on top when they gain more than a bit more.
  m.per_channel_outliers_channel_sqnr_db = 43.2;
  EXPECT_EQ(OutliersWin(QuantScheme::kPerTensorSymmetric, m, true, true),
            QuantScheme::kPerChannelSymmetric);
  // Per-tensor + outliers not transparent, per-channel not either: the pick +
  // outliers when it gains a bit.
  m.per_tensor_channel_sqnr_db = 10.0;
  m.per_tensor_outliers_channel_sqnr_db = 18.0;
  m.per_channel_channel_sqnr_db = 17.0;
  m.per_channel_outliers_channel_sqnr_db = 30.0;
  EXPECT_EQ(OutliersWin(QuantScheme::kPerChannelSymmetric, m, true, true),
            QuantScheme::kPerChannelSymmetric);
  m.per_channel_outliers_channel_sqnr_db = 20.0;  // less than a bit
  EXPECT_EQ(OutliersWin(QuantScheme::kPerChannelSymmetric, m, true, true),
            std::nullopt);
}

TEST(Outliers, DeltasAreNotMadeAgainstAnOutlierBase) {
  const Tensor t = Layer(8);
  const PackedLayer base =
      Encode(t, LayerCodec::kHevc, QuantScheme::kPerTensorSymmetric, true);
  auto delta = EncodeLayerDelta(base, t, t, -6, 1);
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_FALSE(delta->has_value());
}

// Hostile packed layers: every lie about the side list is refused before it is
// used, with a message naming the layer.
std::string ParseError(const v1::PackedLayerHeader& header,
                       const std::vector<uint8_t>& payload) {
  const std::string h = header.SerializeAsString();
  std::vector<uint8_t> bytes = {'W', 'C', 'L', '1'};
  for (int i = 0; i < 4; ++i)
    bytes.push_back(static_cast<uint8_t>(h.size() >> (8 * i)));
  bytes.insert(bytes.end(), h.begin(), h.end());
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  size_t consumed = 0;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  if (parsed.ok()) return "ok";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(Outliers, RejectsHostileSideLists) {
  const PackedLayer good = Encode(Layer(8), LayerCodec::kZstdInt8,
                                  QuantScheme::kPerTensorSymmetric, true);
  const std::vector<uint8_t> bytes = SerializePackedLayer(good);
  const uint32_t length = bytes[4] | bytes[5] << 8 | bytes[6] << 16 |
                          static_cast<uint32_t>(bytes[7]) << 24;
  v1::PackedLayerHeader header;
  ASSERT_TRUE(header.ParseFromArray(bytes.data() + 8, length));
  const std::vector<uint8_t> payload(bytes.begin() + 8 + length, bytes.end());
  ASSERT_EQ(header.format_version(), 2u);
  EXPECT_EQ(ParseError(header, payload), "ok");

  auto with = [&](auto edit) {
    v1::PackedLayerHeader h = header;
    edit(h);
    return ParseError(h, payload);
  };
  auto list = [](std::vector<int64_t> indices, std::vector<uint16_t> values) {
    const std::vector<uint8_t> frame =
        SerializeOutliers(OutlierList{std::move(indices), std::move(values)});
    return std::string(frame.begin(), frame.end());
  };
  // A version 1 reader's layer cannot carry outliers, and version 2 must.
  EXPECT_THAT(with([](auto& h) { h.set_format_version(1); }),
              HasSubstr("format version 1 with 8 outliers"));
  EXPECT_THAT(with([](auto& h) { h.set_outlier_count(0); }),
              HasSubstr("format version 2 with 0 outliers"));
  // Version 3 (column scales, outliers or not) must carry column scales.
  EXPECT_THAT(with([](auto& h) { h.set_format_version(3); }),
              HasSubstr("format version 3 with 0 bytes of column scales"));
  EXPECT_THAT(with([](auto& h) { h.set_format_version(5); }),
              HasSubstr("format version 5 is not supported"));
  // The count must match the frame, and be bounded.
  EXPECT_THAT(with([](auto& h) { h.set_outlier_count(9); }),
              HasSubstr("outlier list"));
  EXPECT_THAT(with([](auto& h) { h.set_outlier_count(1ull << 40); }),
              HasSubstr("at most 1/64"));
  EXPECT_THAT(with([](auto& h) { h.set_outliers("garbage"); }),
              HasSubstr("outlier list"));
  // Indices in range; values finite.
  EXPECT_THAT(with([&](auto& h) {
                h.set_outlier_count(2);
                h.set_outliers(list({5, kRows * kCols}, {0x3c00, 0x3c00}));
              }),
              HasSubstr("past the"));
  EXPECT_THAT(with([&](auto& h) {
                h.set_outlier_count(1);
                h.set_outliers(list({5}, {0x7c00}));  // +inf
              }),
              HasSubstr("not a finite float16"));
  // Only int8 codecs (not deltas) carry a side list.
  EXPECT_THAT(with([](auto& h) { h.set_codec(v1::LAYER_CODEC_HEVC_DELTA); }),
              testing::Not(HasSubstr("ok")));
  EXPECT_THAT(
      with([&](auto& h) {
        h.set_codec(v1::LAYER_CODEC_FLOAT16);
        h.clear_scales();
        h.clear_zero_points();
        h.clear_tile_bytes();
        h.add_tile_bytes(payload.size());
      }),
      testing::AnyOf(HasSubstr("cannot have one"), HasSubstr("payload of")));
}

// Truncations and bit flips of an outlier layer parse to an error, or decode
// to an error or to a tensor of the right size; nothing crashes (ASan).
TEST(Outliers, DamagedOutlierLayersNeverCrash) {
  const std::vector<uint8_t> bytes = SerializePackedLayer(Encode(
      Layer(8), LayerCodec::kZstdInt8, QuantScheme::kPerTensorSymmetric, true));
  size_t consumed = 0;
  for (size_t length = 0; length < bytes.size(); length += 7) {
    EXPECT_FALSE(
        ParsePackedLayer(absl::MakeConstSpan(bytes.data(), length), &consumed)
            .ok());
  }
  std::mt19937 rng(21);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> damaged = bytes;
    damaged[rng() % damaged.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    auto parsed = ParsePackedLayer(damaged, &consumed);
    if (!parsed.ok()) continue;
    auto decoded = DecodeLayer(*parsed, 1);
    if (!decoded.ok()) continue;
    auto floats = decoded->ToFloatTensor();
    ASSERT_TRUE(floats.ok()) << floats.status();
    EXPECT_EQ(floats->NumElements(), kRows * kCols);
  }
}

}  // namespace
}  // namespace weightcast
