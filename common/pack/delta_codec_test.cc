#include "common/pack/delta_codec.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// A "trained" matrix and a "fine-tuned" one: a fraction of the weights moved a
// little.
std::vector<float> Weights(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.05f);
  std::vector<float> out(n);
  for (float& v : out) v = w(rng);
  return out;
}

std::vector<float> FineTuned(std::vector<float> w, double fraction,
                             uint32_t seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution moved(fraction);
  std::normal_distribution<float> step(0.0f, 0.002f);
  for (float& v : w) {
    if (moved(rng)) v += step(rng);
  }
  return w;
}

constexpr int64_t kRows = 300, kCols = 200;

// The layer A most tests code, and B: A fine-tuned (30 % of its weights moved).
Tensor Trained() {
  return MakeFloat32Tensor("fc.weight", {kRows, kCols},
                           Weights(kRows * kCols, 1));
}
Tensor TunedFromTrained() {
  return MakeFloat32Tensor("fc.weight", {kRows, kCols},
                           FineTuned(Weights(kRows * kCols, 1), 0.3, 2));
}

PackedLayer Coded(const Tensor& tensor, int qp, bool lossless = false) {
  LayerEncodeOptions options;
  options.hevc = {.qp = qp, .lossless = lossless, .preset = "ultrafast"};
  options.max_tile_size = 128;  // 3 x 2 tiles
  return EncodeLayer(tensor, options).value();
}

TEST(LayerDelta, DecodesBitExactlyAgainstTheHeldBaseForAFractionOfTheBytes) {
  const Tensor a = Trained(), b = TunedFromTrained();
  const PackedLayer base = Coded(a, 27);
  ASSERT_EQ(base.tiles.size(), 6u);
  auto delta = EncodeLayerDelta(base, a, b);
  ASSERT_TRUE(delta.ok()) << delta.status();
  ASSERT_TRUE(delta->has_value());
  const PackedLayer intra_b = Coded(b, 27);
  EXPECT_LT((*delta)->PayloadBytes() * 3, intra_b.PayloadBytes())
      << (*delta)->PayloadBytes() << " vs " << intra_b.PayloadBytes();
  // The reconstruction is as good as B coded on its own, within a dB.
  EXPECT_GT((*delta)->fidelity.sqnr_db, intra_b.fidelity.sqnr_db - 1.0);

  // A delta is a packed layer like any other: it survives serialization, and
  // alone it does not decode.
  size_t consumed = 0;
  const std::vector<uint8_t> delta_bytes = SerializePackedLayer(**delta);
  auto parsed = ParsePackedLayer(delta_bytes, &consumed);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->codec, LayerCodec::kHevcDelta);
  EXPECT_EQ(parsed->base_sha256, (*delta)->base_sha256);
  EXPECT_EQ(parsed->tiles, (*delta)->tiles);
  EXPECT_EQ(DecodeLayer(*parsed).status().code(),
            absl::StatusCode::kFailedPrecondition);

  const std::vector<uint8_t> held = SerializePackedLayer(base);
  auto rebuilt = DecodeLayerDelta(held, *parsed);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  const auto& values = rebuilt->int8->values;
  EXPECT_EQ(
      Sha256(absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(values.data()), values.size())),
      (*delta)->decoded_sha256);
  EXPECT_EQ(rebuilt->int8->scales, base.scales);

  // P pictures at a lower QP than A's: more bytes, closer to B.
  auto finer = EncodeLayerDelta(base, a, b, /*qp_offset=*/-4);
  ASSERT_TRUE(finer.ok() && finer->has_value()) << finer.status();
  EXPECT_GT((*finer)->PayloadBytes(), (*delta)->PayloadBytes());
  EXPECT_GT((*finer)->fidelity.sqnr_db, (*delta)->fidelity.sqnr_db);
  EXPECT_TRUE(DecodeLayerDelta(held, **finer).ok());
  EXPECT_EQ(EncodeLayerDelta(base, a, b, /*qp_offset=*/-40).status().code(),
            absl::StatusCode::kInvalidArgument);

  // The same B against the same A always codes to the same bytes (what a cache
  // relies on).
  EXPECT_EQ(EncodeLayerDelta(base, a, b).value()->tiles, (*delta)->tiles);
}

// A base stored by an older writer (its header carries the fidelity): the
// delta names the bytes the device holds, and decodes against them.
TEST(LayerDelta, ABaseFromAnOlderWriterIsNamedByItsStoredBytes) {
  const Tensor a = Trained(), b = TunedFromTrained();
  PackedLayer coded = Coded(a, 27);
  coded.fidelity_in_header = true;
  const std::vector<uint8_t> stored = SerializePackedLayer(coded);
  size_t consumed = 0;
  const PackedLayer base = ParsePackedLayer(stored, &consumed).value();
  auto delta = EncodeLayerDelta(base, a, b);
  ASSERT_TRUE(delta.ok() && delta->has_value()) << delta.status();
  EXPECT_EQ((*delta)->base_sha256, Sha256(stored));
  EXPECT_TRUE(DecodeLayerDelta(stored, **delta).ok());
}

TEST(LayerDelta, TheStoredDeltaKeepsTheFidelityOfBCodedAlone) {
  const Tensor a = Trained(), b = TunedFromTrained();
  const PackedLayer base = Coded(a, 27);
  const PackedLayer alone = Coded(b, 27);
  const uint64_t alone_bytes = SerializePackedLayer(alone).size();
  auto matched =
      EncodeMatchedLayerDelta(base, a, b, alone.fidelity.sqnr_db, alone_bytes);
  ASSERT_TRUE(matched.ok() && matched->has_value()) << matched.status();
  EXPECT_GE((*matched)->fidelity.sqnr_db, alone.fidelity.sqnr_db);
  EXPECT_LT(SerializePackedLayer(**matched).size(), alone_bytes);
  EXPECT_LE((*matched)->qp, base.qp);
  // Nothing that small keeps the fidelity: B is coded alone.
  EXPECT_FALSE(EncodeMatchedLayerDelta(base, a, b, alone.fidelity.sqnr_db, 100)
                   .value()
                   .has_value());
}

TEST(LayerDelta, AWrongOrDamagedBaseOrDeltaIsDataLossNamingTheLayer) {
  const Tensor a = Trained(), b = TunedFromTrained();
  const PackedLayer base = Coded(a, 32);
  const PackedLayer delta = EncodeLayerDelta(base, a, b).value().value();

  const Tensor other =
      MakeFloat32Tensor("fc.weight", {kRows, kCols}, Weights(kRows * kCols, 9));
  auto wrong = DecodeLayerDelta(SerializePackedLayer(Coded(other, 32)), delta);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("fc.weight"));
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("not the one the delta was made against"));

  std::vector<uint8_t> held = SerializePackedLayer(base);
  held[held.size() / 2] ^= 0x10;
  EXPECT_EQ(DecodeLayerDelta(held, delta).status().code(),
            absl::StatusCode::kDataLoss);

  // Bit flips in the P pictures: an error every time, never a crash or a silent
  // result.
  const std::vector<uint8_t> good = SerializePackedLayer(base);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 30; ++trial) {
    PackedLayer damaged = delta;
    auto& tile = damaged.tiles[trial % damaged.tiles.size()];
    tile[std::uniform_int_distribution<size_t>(0, tile.size() - 1)(rng)] ^=
        static_cast<uint8_t>(1 << (trial % 8));
    auto decoded = DecodeLayerDelta(good, damaged);
    if (decoded.ok()) {
      // A flip that changes nothing the decoder reads (e.g. trailing bits)
      // decodes to B itself.
      const auto& v = decoded->int8->values;
      EXPECT_EQ(Sha256(absl::MakeConstSpan(
                    reinterpret_cast<const uint8_t*>(v.data()), v.size())),
                delta.decoded_sha256);
    } else {
      EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss)
          << decoded.status();
    }
  }
}

TEST(LayerDelta, NoDeltaWhenBOutgrowsTheScaleOrTheBaseIsNotLossyHevc) {
  const std::vector<float> w = Weights(kRows * kCols, 1);
  const Tensor a = MakeFloat32Tensor("fc.weight", {kRows, kCols}, w);
  std::vector<float> grown = w;
  grown[17] =
      1.0f;  // far past max|A| (a nudge of a step or two is clamped instead)
  const Tensor b = MakeFloat32Tensor("fc.weight", {kRows, kCols}, grown);
  EXPECT_FALSE(EncodeLayerDelta(Coded(a, 27), a, b).value().has_value());
  EXPECT_FALSE(EncodeLayerDelta(Coded(a, 0, /*lossless=*/true), a, a)
                   .value()
                   .has_value());
  const Tensor reshaped = MakeFloat32Tensor("fc.weight", {kCols, kRows}, w);
  EXPECT_FALSE(EncodeLayerDelta(Coded(a, 27), a, reshaped).value().has_value());
  // A base source that is not what the base was coded from is the caller's
  // error.
  const Tensor other =
      MakeFloat32Tensor("fc.weight", {kRows, kCols}, Weights(kRows * kCols, 5));
  EXPECT_EQ(EncodeLayerDelta(Coded(a, 27), other, b).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LayerDelta, RefinesACoarseLayerToTheFineTiersFidelity) {
  // A refinement: the same weights, coarse q37 held, P pictures toward q22.
  const Tensor w =
      MakeFloat32Tensor("fc.weight", {kRows, kCols}, Weights(kRows * kCols, 3));
  const PackedLayer coarse = Coded(w, 37);
  const PackedLayer fine = Coded(w, 22);
  const uint64_t fine_bytes = SerializePackedLayer(fine).size();
  auto refinement = EncodeMatchedLayerDelta(coarse, w, w, fine.fidelity.sqnr_db,
                                            fine_bytes * 2, 0, 22 - 37);
  ASSERT_TRUE(refinement.ok()) << refinement.status();
  ASSERT_TRUE(refinement->has_value());
  const PackedLayer& refined = **refinement;
  EXPECT_LE(refined.qp, 22);
  EXPECT_GE(refined.fidelity.sqnr_db, fine.fidelity.sqnr_db);
  EXPECT_GT(refined.fidelity.sqnr_db, coarse.fidelity.sqnr_db + 6);
  auto decoded = DecodeLayerDelta(SerializePackedLayer(coarse), refined);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_TRUE(decoded->int8.has_value());
  EXPECT_EQ(decoded->int8->scales,
            coarse.scales);  // the same quantization as the coarse layer
  // Nothing fits a byte budget below the smallest candidate: the fine layer is
  // sent on its own.
  auto none = EncodeMatchedLayerDelta(coarse, w, w, fine.fidelity.sqnr_db, 100,
                                      0, 22 - 37);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
}

// A FloatRowReader over `values` (`cols` each row) that records the most rows
// it was asked for at once.
FloatRowReader Counted(const std::vector<float>& values, int64_t cols,
                       std::atomic<int64_t>* most_rows) {
  return [read = RowsOfValues(values, cols), most_rows](int64_t first,
                                                        int64_t rows) {
    int64_t most = most_rows->load();
    while (rows > most && !most_rows->compare_exchange_weak(most, rows)) {
    }
    return read(first, rows);
  };
}

// A delta coded from rows read 7 at a time (chunks that straddle the tiles'
// rows) is the delta of the whole tensors, byte for byte, per-tensor and
// per-row scales; its fidelity is MeasureFidelity's over the
// whole tensor as the device decodes it; the readers are never asked for more
// than a chunk. The matched delta too (a refinement's QP search).
TEST(LayerDelta, FromRowsTheSameBytesAChunkAtATime) {
  const std::vector<float> w = Weights(kRows * kCols, 1);
  // Each row kept within its own range, so that B fits per-row scales too.
  std::vector<float> tuned = FineTuned(w, 0.3, 2);
  for (int64_t r = 0; r < kRows; ++r) {
    float bound = 0;
    for (int64_t c = 0; c < kCols; ++c)
      bound = std::max(bound, std::abs(w[r * kCols + c]));
    for (int64_t c = 0; c < kCols; ++c) {
      float& v = tuned[r * kCols + c];
      v = std::clamp(v, -bound, bound);
    }
  }
  for (const QuantScheme scheme :
       {QuantScheme::kPerTensorSymmetric, QuantScheme::kPerChannelSymmetric}) {
    SCOPED_TRACE(QuantSchemeName(scheme));
    const Tensor a = MakeFloat32Tensor("fc.weight", {kRows, kCols}, w);
    const Tensor b = MakeFloat32Tensor("fc.weight", {kRows, kCols}, tuned);
    LayerEncodeOptions options;
    options.hevc = {.qp = 27, .lossless = false, .preset = "ultrafast"};
    options.max_tile_size = 128;  // 3 x 2 tiles
    options.scheme = scheme;
    const PackedLayer base = EncodeLayer(a, options).value();
    const std::vector<float> b_values = ToFloat32(b).value();
    std::atomic<int64_t> most_rows = 0;
    const TensorRows a_rows{a, Counted(w, kCols, &most_rows)};
    const TensorRows b_rows{b, Counted(b_values, kCols, &most_rows)};
    auto whole = EncodeLayerDelta(base, a, b, -3);
    ASSERT_TRUE(whole.ok()) << whole.status();
    ASSERT_TRUE(whole->has_value());
    auto rows = EncodeLayerDeltaFromRows(base, a_rows, b_rows, -3, 0,
                                         /*chunk_elements=*/7 * kCols);
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_TRUE(rows->has_value());
    EXPECT_EQ(SerializePackedLayer(**rows), SerializePackedLayer(**whole));
    EXPECT_LE(most_rows.load(), 7);
    // The fidelity recorded is the whole tensor's, as decoded.
    const QuantizedTensor qa =
        Quantize(a.name, a.shape, w, base.scheme).value();
    const QuantizedTensor qb = QuantizeLike(b.name, b_values, qa).value();
    auto decoded = DecodeLayerDelta(SerializePackedLayer(base), **rows);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const Fidelity fidelity = MeasureFidelity(
        b_values, qb, decoded->int8->values, (*rows)->PayloadBytes());
    EXPECT_EQ((*rows)->fidelity.sqnr_db, fidelity.sqnr_db);
    EXPECT_EQ((*rows)->fidelity.sqnr_int8_db, fidelity.sqnr_int8_db);

    auto matched = EncodeMatchedLayerDeltaFromRows(
        base, a_rows, b_rows, (*whole)->fidelity.sqnr_db, 1 << 20);
    ASSERT_TRUE(matched.ok()) << matched.status();
    ASSERT_TRUE(matched->has_value());
    auto matched_whole = EncodeMatchedLayerDelta(
        base, a, b, (*whole)->fidelity.sqnr_db, 1 << 20);
    ASSERT_TRUE(matched_whole.ok()) << matched_whole.status();
    ASSERT_TRUE(matched_whole->has_value());
    EXPECT_EQ(SerializePackedLayer(**matched),
              SerializePackedLayer(**matched_whole));
  }
}

}  // namespace
}  // namespace weightcast
