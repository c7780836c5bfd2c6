#include "common/pack/layer_codec.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/pack/packed_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// Weights with some row structure, like a trained layer: row scale times
// Gaussian noise.
Tensor Weights(const std::string& name, std::vector<int64_t> shape,
               unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto [rows, cols] = MatrixView(shape);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = 0.02f * (1.0f + 0.5f * std::sin(0.1f * r));
    for (int64_t c = 0; c < cols; ++c)
      values[r * cols + c] = row_scale * normal(rng);
  }
  return MakeFloat32Tensor(name, std::move(shape), values);
}

LayerEncodeOptions Hevc(int qp, bool lossless = false,
                        int max_tile = kDefaultMaxTileSize) {
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.hevc = {qp, lossless, "ultrafast"};
  options.max_tile_size = max_tile;
  return options;
}

RebuiltTensor RoundTrip(const Tensor& tensor, const LayerEncodeOptions& options,
                        PackedLayer* packed_out = nullptr) {
  auto packed = EncodeLayer(tensor, options);
  EXPECT_TRUE(packed.ok()) << packed.status();
  const std::vector<uint8_t> bytes = SerializePackedLayer(*packed);
  size_t consumed = 0;
  auto parsed = ParsePackedLayer(bytes, &consumed);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(consumed, bytes.size());
  auto decoded = DecodeLayer(*parsed);
  EXPECT_TRUE(decoded.ok()) << decoded.status();
  if (packed_out) *packed_out = *packed;
  return *decoded;
}

std::vector<int8_t> Int8Of(const Tensor& tensor) {
  return Quantize(tensor.name, tensor.shape, ToFloat32(tensor).value(),
                  QuantScheme::kPerTensorSymmetric)
      ->values;
}

TEST(LayerCodec, LosslessHevcAndZstdAreBitExact) {
  const Tensor w = Weights("fc1.weight", {96, 200});
  const std::vector<int8_t> expected = Int8Of(w);
  EXPECT_EQ(RoundTrip(w, Hevc(0, /*lossless=*/true)).int8->values, expected);
  LayerEncodeOptions zstd;
  zstd.codec = LayerCodec::kZstdInt8;
  PackedLayer packed;
  EXPECT_EQ(RoundTrip(w, zstd, &packed).int8->values, expected);
  EXPECT_TRUE(std::isinf(packed.fidelity.sqnr_int8_db));
  LayerEncodeOptions raw;
  raw.codec = LayerCodec::kRawInt8;
  EXPECT_EQ(RoundTrip(w, raw).int8->values, expected);
}

TEST(LayerCodec, TilesOnBorrowedThreadsCodeTheSameBytes) {
  // 5 x 3 tiles of at most 64: the same bytes with one thread, with a spawner
  // whose tasks run on threads of their own, and with one whose tasks never
  // run.
  const Tensor w = Weights("embed.weight", {300, 150});
  LayerEncodeOptions alone = Hevc(27, false, 64);
  alone.threads = 1;
  auto expected = EncodeLayer(w, alone);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->tiles.size(), 15u);
  std::vector<std::thread> threads;
  std::atomic<int> helped{0};
  LayerEncodeOptions shared = alone;
  shared.tile_helpers = 3;
  shared.tile_spawner = [&](std::function<void()> task) {
    threads.emplace_back([task = std::move(task), &helped] {
      task();
      helped++;
    });
  };
  auto borrowed = EncodeLayer(w, shared);
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(borrowed.ok()) << borrowed.status();
  EXPECT_EQ(helped.load(), 6);  // 3 to code, 3 to check what was coded
  EXPECT_EQ(SerializePackedLayer(*borrowed), SerializePackedLayer(*expected));
  std::vector<std::function<void()>> never_run;
  shared.tile_spawner = [&](std::function<void()> task) {
    never_run.push_back(std::move(task));
  };
  auto unhelped = EncodeLayer(w, shared);
  ASSERT_TRUE(unhelped.ok()) << unhelped.status();
  EXPECT_EQ(SerializePackedLayer(*unhelped), SerializePackedLayer(*expected));
  for (auto& task : never_run) task();  // late: every tile is taken; a no-op
}

TEST(LayerCodec, SqnrFallsAndBytesShrinkAsQpRises) {
  const Tensor w = Weights("fc1.weight", {256, 256});
  double last_sqnr = INFINITY;
  uint64_t last_bytes = UINT64_MAX;
  for (int qp : {22, 27, 32, 37}) {
    PackedLayer packed;
    const RebuiltTensor decoded = RoundTrip(w, Hevc(qp), &packed);
    EXPECT_LT(packed.fidelity.sqnr_db, last_sqnr) << "qp " << qp;
    EXPECT_LT(packed.PayloadBytes(), last_bytes) << "qp " << qp;
    // Bounded error: the decoded int8 stays within a QP-dependent distance of
    // the original.
    const std::vector<int8_t> original = Int8Of(w);
    int max_diff = 0;
    for (size_t i = 0; i < original.size(); ++i) {
      max_diff =
          std::max(max_diff, std::abs(original[i] - decoded.int8->values[i]));
    }
    // HEVC's quantizer step is 2^((QP-4)/6); spatial errors stay within twice
    // that.
    EXPECT_LE(max_diff, 2.0 * std::pow(2.0, (qp - 4) / 6.0)) << "qp " << qp;
    EXPECT_GT(packed.fidelity.sqnr_db, 0.0);
    last_sqnr = packed.fidelity.sqnr_db;
    last_bytes = packed.PayloadBytes();
  }
}

TEST(LayerCodec, OddShapesRebuildExactlyAndPaddingNeverLeaks) {
  struct Case {
    std::vector<int64_t> shape;
    int max_tile;
  };
  const Case cases[] = {{{1, 5000}, 4096},    {{5000, 1}, 4096},
                        {{3, 5}, 4096},       {{4097, 33}, 4096},
                        {{33, 4097}, 4096},   {{150, 200}, 64},
                        {{16, 3, 3, 3}, 4096}};
  for (const Case& c : cases) {
    const Tensor w = Weights("odd", c.shape, 3);
    PackedLayer packed;
    const RebuiltTensor decoded =
        RoundTrip(w, Hevc(0, true, c.max_tile), &packed);
    EXPECT_EQ(decoded.shape, c.shape);
    EXPECT_EQ(decoded.int8->values, Int8Of(w)) << ShapeToString(c.shape);
    if (c.max_tile == 64) {
      EXPECT_GT(packed.grid.RowTiles(), 1);
      EXPECT_GT(packed.grid.ColTiles(), 1);
    }
  }
}

TEST(LayerCodec, FloatAndPassthroughLayersRoundTrip) {
  const Tensor bias = MakeFloat32Tensor(
      "fc1.bias", {4}, std::vector<float>{0.5f, -1.0f, 2.0f, 0.0f});
  LayerEncodeOptions f32;
  f32.codec = LayerCodec::kFloat32;
  EXPECT_EQ(RoundTrip(bias, f32).ToFloatTensor()->data, bias.data);
  Tensor counter{
      "bn.num_batches_tracked", {}, DType::kInt64, std::vector<uint8_t>(8, 0)};
  counter.data[0] = 42;
  LayerEncodeOptions pass;
  pass.codec = LayerCodec::kPassthrough;
  const Tensor back = RoundTrip(counter, pass).ToFloatTensor().value();
  EXPECT_EQ(back.dtype, DType::kInt64);
  EXPECT_EQ(back.data, counter.data);
}

// Float16 float layers (accuracy tiers): half the bytes within float16's
// precision; a tensor with a value past float16's range stays float32, exact.
TEST(LayerCodec, Float16LayersHalveTheBytesAndKeepFloat32WhenOutOfRange) {
  const Tensor bias = MakeFloat32Tensor(
      "bn.running_var", {4}, std::vector<float>{0.5f, 1e-3f, 2.0f, 3e4f});
  LayerEncodeOptions f16;
  f16.codec = LayerCodec::kFloat16;
  const PackedLayer half = EncodeLayer(bias, f16).value();
  EXPECT_EQ(half.codec, LayerCodec::kFloat16);
  EXPECT_EQ(half.PayloadBytes(), 8u);
  EXPECT_GT(half.fidelity.sqnr_db, 60);
  const std::vector<float> back =
      ToFloat32(DecodeLayer(half).value().ToFloatTensor().value()).value();
  ASSERT_EQ(back.size(), 4u);
  EXPECT_NEAR(back[1], 1e-3f, 1e-6f);

  const Tensor wide = MakeFloat32Tensor("bn.running_var", {3},
                                        std::vector<float>{0.5f, 1e6f, 2.0f});
  const PackedLayer kept = EncodeLayer(wide, f16).value();
  EXPECT_EQ(kept.codec, LayerCodec::kFloat32);
  EXPECT_EQ(DecodeLayer(kept).value().ToFloatTensor()->data, wide.data);
}

TEST(LayerCodec, NanIsAnErrorNamingTheTensor) {
  Tensor w = MakeFloat32Tensor("classifier.weight", {2, 2},
                               std::vector<float>{1, NAN, 0, 1});
  auto packed = EncodeLayer(w, Hevc(27));
  EXPECT_EQ(packed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(packed.status().message()),
              HasSubstr("classifier.weight"));
}

TEST(LayerCodec, DamagedTileIsDataLossNamingTheLayer) {
  PackedLayer packed =
      EncodeLayer(Weights("fc2.weight", {64, 64}), Hevc(27)).value();
  packed.tiles[0].resize(packed.tiles[0].size() / 2);
  auto decoded = DecodeLayer(packed);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("fc2.weight"));
}

TEST(PackedModel, PacksAndUnpacksAWholeModel) {
  Model model;
  model.tensors.push_back(Weights("fc1.weight", {128, 64}));
  model.tensors.push_back(
      MakeFloat32Tensor("fc1.bias", {128}, std::vector<float>(128, 0.1f)));
  model.tensors.push_back(Weights("conv.weight", {8, 3, 3, 3}));
  model.tensors.push_back(Tensor{
      "bn.num_batches_tracked", {}, DType::kInt64, std::vector<uint8_t>(8, 1)});
  PackOptions options;
  options.base.hevc.preset = "ultrafast";
  for (const char* tier_name : {"q27", "lossless"}) {
    const TierSpec tier = ParseTier(tier_name).value();
    auto layers = PackModel(model, tier, options);
    ASSERT_TRUE(layers.ok()) << layers.status();
    EXPECT_EQ((*layers)[0].codec, tier.picture_codec);
    EXPECT_EQ((*layers)[1].codec, LayerCodec::kFloat32);
    EXPECT_EQ((*layers)[2].codec, LayerCodec::kZstdInt8);
    EXPECT_EQ((*layers)[3].codec, LayerCodec::kPassthrough);
    auto parsed = ParsePackedModel(SerializePackedModel(*layers));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    auto back = UnpackModel(*parsed);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(back->tensors.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(back->tensors[i].name, model.tensors[i].name);
      EXPECT_EQ(back->tensors[i].shape, model.tensors[i].shape);
    }
    EXPECT_EQ(back->tensors[3].data, model.tensors[3].data);
  }
}

TEST(PackedModel, RepeatedNamesAreAnError) {
  Model model;
  model.tensors.push_back(Weights("w", {4, 4}));
  model.tensors.push_back(Weights("w", {4, 4}));
  auto layers = PackModel(model, ParseTier("q27").value(), PackOptions{});
  EXPECT_THAT(std::string(layers.status().message()),
              HasSubstr("'w' appears twice"));
}

// bf16 bytes of `tensor` (a float32 tensor), rounded to nearest even.
Tensor ToBFloat16(const Tensor& tensor) {
  const std::vector<float> values = ToFloat32(tensor).value();
  Tensor out{tensor.name, tensor.shape, DType::kBFloat16, {}};
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits += 0x7fff + ((bits >> 16) & 1);
    out.data.push_back(static_cast<uint8_t>(bits >> 16));
    out.data.push_back(static_cast<uint8_t>(bits >> 24));
  }
  return out;
}

// A FloatRowReader over `tensor` that counts its calls and the most rows it
// was asked for at once.
FloatRowReader RowsOf(const Tensor& tensor, int* calls, int64_t* most_rows) {
  return
      [&tensor, calls, most_rows](
          int64_t first, int64_t rows) -> absl::StatusOr<std::vector<float>> {
        {  // tile jobs read rows from several threads
          static absl::Mutex counting;
          absl::MutexLock lock(&counting);
          ++*calls;
          *most_rows = std::max(*most_rows, rows);
        }
        const std::vector<float> all = ToFloat32(tensor).value();
        const int64_t cols = static_cast<int64_t>(all.size()) /
                             (tensor.shape.size() >= 2 ? tensor.shape[0] : 1);
        return std::vector<float>(all.begin() + first * cols,
                                  all.begin() + (first + rows) * cols);
      };
}

TEST(EncodeLayerFromRows, SameBytesAsTheWholeTensor) {
  // A layer of 3x2 tiles read 7 rows at a time (chunks that straddle tiles);
  // rows with outliers so that auto picks per-channel scales for one tensor.
  Tensor plain = ToBFloat16(Weights("plain", {90, 80}, 3));
  Tensor outliers = Weights("outliers", {90, 80}, 4);
  {
    std::vector<float> values = ToFloat32(outliers).value();
    for (int64_t r = 0; r < 90; r += 9) values[r * 80] = 40.0f;
    outliers = ToBFloat16(MakeFloat32Tensor("outliers", {90, 80}, values));
  }
  const Tensor conv = ToBFloat16(Weights("conv", {12, 3, 3, 3}, 5));
  const Tensor bias = ToBFloat16(Weights("bias", {300}, 6));
  struct Case {
    const Tensor* tensor;
    LayerEncodeOptions options;
  };
  std::vector<Case> cases;
  // Rows of two scales 16x apart (as a folded batch norm leaves them), no
  // weight far past its row's RMS: per-channel scales, from rows.
  Tensor row_scales;
  {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(90 * 80);
    for (int64_t r = 0; r < 90; ++r)
      for (int64_t c = 0; c < 80; ++c)
        values[r * 80 + c] = 0.02f * (r % 2 ? 16.0f : 1.0f) *
                             std::clamp(normal(rng), -3.5f, 3.5f);
    row_scales = ToBFloat16(MakeFloat32Tensor("row_scales", {90, 80}, values));
  }
  // 2 % of the weights x100 in three magnitudes (ties: ranked by index): more
  // candidates past 6 RMS than the 1 % the outlier front end keeps.
  Tensor spiky;
  {
    std::mt19937 rng(8);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(90 * 80);
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = i % 50 == 7 ? (i % 3 == 0 ? -1.0f : 1.0f) *
                                    static_cast<float>(90 + 10 * (i % 3))
                              : normal(rng);
    }
    spiky = ToBFloat16(MakeFloat32Tensor("spiky", {90, 80}, values));
  }
  for (const Tensor* t : std::vector<const Tensor*>{&plain, &outliers, &conv,
                                                    &row_scales, &spiky}) {
    LayerEncodeOptions hevc = Hevc(27, false, 32);
    hevc.threads = 2;
    hevc.choose_scheme = true;
    cases.push_back({t, hevc});
  }
  // The outlier front end as given, per row and per tensor.
  for (QuantScheme scheme :
       {QuantScheme::kPerChannelSymmetric, QuantScheme::kPerTensorSymmetric,
        QuantScheme::kPerChannelAsymmetric}) {
    LayerEncodeOptions given = Hevc(22, false, 32);
    given.scheme = scheme;
    given.outliers = true;
    cases.push_back({&spiky, given});
  }
  LayerEncodeOptions asymmetric = Hevc(32, false, 32);
  asymmetric.scheme = QuantScheme::kPerChannelAsymmetric;
  cases.push_back({&plain, asymmetric});
  LayerEncodeOptions zstd;
  zstd.codec = LayerCodec::kZstdInt8;
  zstd.choose_scheme = true;
  cases.push_back({&outliers, zstd});
  cases.push_back({&bias, zstd});
  LayerEncodeOptions raw;
  raw.codec = LayerCodec::kRawInt8;
  raw.scheme = QuantScheme::kPerTensorAsymmetric;
  cases.push_back({&conv, raw});
  bool saw_per_channel = false;
  int with_outliers = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tensor->name);
    auto whole = EncodeLayer(*c.tensor, c.options);
    ASSERT_TRUE(whole.ok()) << whole.status();
    // Per-channel chosen on the rows path (not a layer read whole).
    saw_per_channel |= whole->scheme == QuantScheme::kPerChannelSymmetric &&
                       c.options.choose_scheme && c.tensor == &row_scales;
    int calls = 0;
    int64_t most_rows = 0;
    const Tensor header{c.tensor->name, c.tensor->shape, c.tensor->dtype, {}};
    auto rows = EncodeLayerFromRows(
        header, RowsOf(*c.tensor, &calls, &most_rows), c.options,
        /*chunk_elements=*/7 * 80);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(SerializePackedLayer(*rows), SerializePackedLayer(*whole));
    EXPECT_EQ(rows->outliers.indices, whole->outliers.indices);
    EXPECT_EQ(rows->fidelity.sqnr_db, whole->fidelity.sqnr_db);
    EXPECT_EQ(rows->fidelity.sqnr_int8_db, whole->fidelity.sqnr_int8_db);
    EXPECT_EQ(rows->fidelity.channel_sqnr_db, whole->fidelity.channel_sqnr_db);
    EXPECT_EQ(rows->fidelity.max_abs_error, whole->fidelity.max_abs_error);
    EXPECT_EQ(rows->fidelity.bits_per_weight, whole->fidelity.bits_per_weight);
    // Never the layer at once, outliers or not.
    if (c.tensor->shape[0] == 90) {
      EXPECT_EQ(most_rows, 7);
    }
    EXPECT_GT(calls, 1);
    if (!whole->outliers.empty()) ++with_outliers;
    if (c.tensor == &spiky) {  // capped at 1 % of the weights
      EXPECT_LE(whole->outliers.indices.size(), 72u);
    }
  }
  EXPECT_TRUE(saw_per_channel);
  EXPECT_GE(with_outliers, 4);
}

TEST(EncodeLayerFromRows, RefusesWhatItCannotCode) {
  int calls = 0;
  int64_t most_rows = 0;
  const Tensor t = ToBFloat16(Weights("w", {8, 8}));
  LayerEncodeOptions f32;
  f32.codec = LayerCodec::kFloat32;
  EXPECT_THAT(EncodeLayerFromRows({"w", {8, 8}, DType::kBFloat16, {}},
                                  RowsOf(t, &calls, &most_rows), f32)
                  .status()
                  .message(),
              HasSubstr("only as int8"));
  EXPECT_THAT(EncodeLayerFromRows({"e", {0, 8}, DType::kBFloat16, {}},
                                  RowsOf(t, &calls, &most_rows), Hevc(27))
                  .status()
                  .message(),
              HasSubstr("empty"));
  // A reader that gives fewer values than asked for, or fails.
  const FloatRowReader short_reader =
      [](int64_t, int64_t rows) -> absl::StatusOr<std::vector<float>> {
    return std::vector<float>(static_cast<size_t>(rows * 8 - 1), 0.5f);
  };
  EXPECT_THAT(EncodeLayerFromRows({"w", {8, 8}, DType::kBFloat16, {}},
                                  short_reader, Hevc(27))
                  .status()
                  .message(),
              HasSubstr("values read for"));
  const FloatRowReader nan_reader =
      [](int64_t, int64_t rows) -> absl::StatusOr<std::vector<float>> {
    std::vector<float> v(static_cast<size_t>(rows * 8), 0.5f);
    v[3] = NAN;
    return v;
  };
  EXPECT_THAT(EncodeLayerFromRows({"w", {8, 8}, DType::kBFloat16, {}},
                                  nan_reader, Hevc(27))
                  .status()
                  .message(),
              HasSubstr("must be finite"));
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace weightcast

namespace weightcast {
namespace {

TEST(EncodeLayerCancelled, StopsAtTheNextTile) {
  // 3x3 tiles; cancelled once the first tile has been asked about.
  const Tensor t = ToBFloat16(Weights("w", {96, 96}, 7));
  const Tensor header{t.name, t.shape, t.dtype, {}};
  for (const bool from_rows : {false, true}) {
    SCOPED_TRACE(from_rows);
    std::atomic<int> asked{0};
    LayerEncodeOptions options = Hevc(27, false, 32);
    options.threads = 1;
    options.cancelled = [&asked] { return asked.fetch_add(1) >= 1; };
    int calls = 0;
    int64_t most_rows = 0;
    auto layer = from_rows ? EncodeLayerFromRows(
                                 header, RowsOf(t, &calls, &most_rows), options)
                           : EncodeLayer(t, options);
    EXPECT_EQ(layer.status().code(), absl::StatusCode::kCancelled);
    EXPECT_THAT(layer.status().message(), HasSubstr("'w'"));
    EXPECT_EQ(asked.load(), 9);  // every tile asks, only the first is coded
  }
  LayerEncodeOptions never = Hevc(27, false, 32);
  never.cancelled = [] { return false; };
  auto coded = EncodeLayer(t, never);
  ASSERT_TRUE(coded.ok()) << coded.status();
  EXPECT_EQ(SerializePackedLayer(*coded),
            SerializePackedLayer(*EncodeLayer(t, Hevc(27, false, 32))));
}

}  // namespace
}  // namespace weightcast
