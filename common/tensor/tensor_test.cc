#include "common/tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"
#include "common/tensor/strided_extent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

std::vector<float> Gaussian(size_t n, float sigma, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> values(n);
  for (float& v : values) v = normal(rng);
  return values;
}

TEST(Quantize, PerTensorSymmetricUsesMaxAbsOver127) {
  const std::vector<float> w = {0.5f, -1.27f, 0.0f, 1.0f};
  auto q = Quantize("fc.weight", {2, 2}, w, QuantScheme::kPerTensorSymmetric);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->scales.size(), 1u);
  EXPECT_FLOAT_EQ(q->scales[0], 0.01f);
  EXPECT_EQ(q->zero_points[0], 0);
  EXPECT_EQ(q->values, (std::vector<int8_t>{50, -127, 0, 100}));
}

TEST(Quantize, AllZeroTensorIsFine) {
  auto q = Quantize("zeros", {3, 3}, std::vector<float>(9, 0.0f),
                    QuantScheme::kPerTensorSymmetric);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->values, std::vector<int8_t>(9, 0));
  EXPECT_EQ(Dequantize(*q), std::vector<float>(9, 0.0f));
}

TEST(Quantize, NanOrInfIsAnErrorNamingTheTensor) {
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    auto q = Quantize("layer3.weight", {2}, {1.0f, bad},
                      QuantScheme::kPerTensorSymmetric);
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(q.status().message()), HasSubstr("layer3.weight"));
  }
}

TEST(Quantize, ShapeMismatchIsAnError) {
  auto q = Quantize("fc", {3, 3}, std::vector<float>(8),
                    QuantScheme::kPerTensorSymmetric);
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("fc"));
}

TEST(Quantize, EverySchemeRoundTripsWithinHalfAStep) {
  const std::vector<float> w = Gaussian(64 * 32, 0.05f, 1);
  for (QuantScheme scheme :
       {QuantScheme::kPerTensorSymmetric, QuantScheme::kPerChannelSymmetric,
        QuantScheme::kPerTensorAsymmetric,
        QuantScheme::kPerChannelAsymmetric}) {
    auto q = Quantize("w", {64, 32}, w, scheme);
    ASSERT_TRUE(q.ok());
    const bool per_channel = scheme == QuantScheme::kPerChannelSymmetric ||
                             scheme == QuantScheme::kPerChannelAsymmetric;
    EXPECT_EQ(q->scales.size(), per_channel ? 64u : 1u)
        << QuantSchemeName(scheme);
    const std::vector<float> back = Dequantize(*q);
    for (size_t i = 0; i < w.size(); ++i) {
      const float step = q->scales[i / q->ElementsPerScale()];
      EXPECT_LE(std::abs(back[i] - w[i]), 0.5f * step + 1e-7f)
          << QuantSchemeName(scheme);
    }
    EXPECT_GT(SqnrDb(w, back), 30.0) << QuantSchemeName(scheme);
  }
}

TEST(Quantize, DequantizeRangeIsASliceOfTheWholeWithOutliersOverTheirs) {
  const std::vector<float> w = Gaussian(40 * 25, 0.05f, 2);
  auto q = Quantize("w", {40, 25}, w, QuantScheme::kPerChannelAsymmetric);
  ASSERT_TRUE(q.ok());
  const std::vector<float> whole = Dequantize(*q);
  const std::vector<int64_t> indices = {0, 24, 25, 517, 999};
  const std::vector<float> outliers = {9.0f, -8.0f, 7.0f, 6.5f, -5.0f};
  std::vector<float> expected = whole;
  for (size_t k = 0; k < indices.size(); ++k)
    expected[indices[k]] = outliers[k];
  // Ranges that start and end inside a scale group, span several, or are one
  // element or empty.
  for (const auto& [first, count] :
       std::vector<std::pair<int64_t, int64_t>>{{0, 1000},
                                                {0, 25},
                                                {13, 400},
                                                {24, 2},
                                                {517, 1},
                                                {999, 1},
                                                {7, 0}}) {
    std::vector<float> out(count, -1.0f);
    DequantizeRange(*q, 1000, first,
                    absl::MakeConstSpan(q->values).subspan(first, count),
                    indices, outliers, absl::MakeSpan(out));
    EXPECT_EQ(out, std::vector<float>(expected.begin() + first,
                                      expected.begin() + first + count))
        << first << " +" << count;
  }
  // Elements past the last whole scale group dequantize to 0, as Dequantize's.
  QuantizedTensor odd;
  odd.scales = {0.5f, 2.0f, 1.0f};
  odd.zero_points = {0, 1, 0};
  odd.values = std::vector<int8_t>(10, 3);
  std::vector<float> tail(4);
  DequantizeRange(odd, 10, 6, absl::MakeConstSpan(odd.values).subspan(6), {},
                  {}, absl::MakeSpan(tail));
  EXPECT_EQ(tail, (std::vector<float>{3.0f, 3.0f, 3.0f, 0.0f}));
  EXPECT_EQ(Dequantize(odd),
            (std::vector<float>{1.5f, 1.5f, 1.5f, 4.0f, 4.0f, 4.0f, 3.0f, 3.0f,
                                3.0f, 0.0f}));
}

TEST(Quantize, SchemeNamesRoundTrip) {
  auto scheme = QuantSchemeFromName("per-channel-asymmetric");
  ASSERT_TRUE(scheme.ok());
  EXPECT_EQ(QuantSchemeName(*scheme), "per-channel-asymmetric");
  EXPECT_FALSE(QuantSchemeFromName("per-row").ok());
}

TEST(Fidelity, MeasuredElementByElementAsOnWholeCopies) {
  // The figures go into packed layers: they must be bit for bit those of the
  // whole-array formulas, per-tensor and per-channel, asymmetric too.
  std::vector<float> values(48 * 40);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = std::sin(0.37f * static_cast<float>(i)) * (1 + i % 7);
  for (int i = 0; i < 40; ++i) values[5 * 40 + i] = 0;  // a silent row
  for (QuantScheme scheme :
       {QuantScheme::kPerTensorSymmetric, QuantScheme::kPerChannelSymmetric,
        QuantScheme::kPerChannelAsymmetric}) {
    const QuantizedTensor q = Quantize("w", {48, 40}, values, scheme).value();
    std::vector<int8_t> decoded = q.values;
    for (size_t i = 0; i < decoded.size(); i += 3)
      decoded[i] = static_cast<int8_t>(std::clamp(decoded[i] + 2, -127, 127));
    const Fidelity got = MeasureFidelity(values, q, decoded, 999);
    const std::vector<float> reconstruction = Dequantize(q, decoded);
    EXPECT_EQ(got.sqnr_db, SqnrDb(values, reconstruction));
    EXPECT_EQ(got.sqnr_int8_db, SqnrDb(Dequantize(q), reconstruction));
    EXPECT_EQ(got.channel_sqnr_db, ChannelSqnrDb(values, reconstruction, 48));
    double max_error = 0;
    for (size_t i = 0; i < values.size(); ++i)
      max_error = std::max(max_error, std::abs(static_cast<double>(values[i]) -
                                               reconstruction[i]));
    EXPECT_EQ(got.max_abs_error, max_error);
  }
}

TEST(Fidelity, ExactReconstructionIsInfiniteSqnr) {
  const std::vector<float> w = Gaussian(100, 1.0f, 2);
  auto q = Quantize("w", {10, 10}, w, QuantScheme::kPerTensorSymmetric);
  ASSERT_TRUE(q.ok());
  const Fidelity f = MeasureFidelity(w, *q, q->values, 100);
  EXPECT_TRUE(std::isinf(f.sqnr_int8_db));
  EXPECT_GT(f.sqnr_db, 30.0);
  EXPECT_DOUBLE_EQ(f.bits_per_weight, 8.0);
  EXPECT_LE(f.max_abs_error, 0.5 * q->scales[0] + 1e-6);
}

TEST(Fidelity, ColumnScaledSqnrWeighsEachColumnsErrorByItsScale) {
  // Two rows of four columns; the error sits in column 1 only.
  const std::vector<float> reference = {1, 1, 1, 1, 1, 1, 1, 1};
  std::vector<float> reconstruction = reference;
  reconstruction[1] = reconstruction[5] = 0.5f;
  const double plain = SqnrDb(reference, reconstruction);
  EXPECT_DOUBLE_EQ(ColumnScaledSqnrDb(reference, reconstruction, {}, 1, 4),
                   plain);
  // Columns 0-1 scaled by 2, 2-3 by 1 (repeat 2): signal 2*(4+4+1+1),
  // noise 2*4*0.25.
  EXPECT_NEAR(ColumnScaledSqnrDb(reference, reconstruction, {2, 1}, 2, 4),
              10 * std::log10(20.0 / 2.0), 1e-9);
  // Scaling only the exact columns raises the SNR above the plain one.
  EXPECT_GT(ColumnScaledSqnrDb(reference, reconstruction, {1, 3}, 2, 4), plain);
  EXPECT_TRUE(
      std::isinf(ColumnScaledSqnrDb(reference, reference, {2, 1}, 2, 4)));
}

TEST(Tensor, ToFloat32ConvertsHalfAndBFloat16) {
  Tensor half{"h", {3}, DType::kFloat16, {}};
  for (float v : {1.0f, -2.5f, 65504.0f}) {
    uint16_t bits = FloatToHalf(v);
    half.data.push_back(bits & 0xff);
    half.data.push_back(bits >> 8);
  }
  auto values = ToFloat32(half);
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(*values, (std::vector<float>{1.0f, -2.5f, 65504.0f}));
  Tensor bf16{"b", {1}, DType::kBFloat16, {0x80, 0x3f}};  // 0x3f80 = 1.0
  EXPECT_EQ(ToFloat32(bf16).value(), std::vector<float>{1.0f});
}

TEST(Tensor, ToFloat32RejectsShortDataAndNonFinite) {
  Tensor short_data{"enc.w", {4}, DType::kFloat32, std::vector<uint8_t>(12)};
  EXPECT_THAT(std::string(ToFloat32(short_data).status().message()),
              HasSubstr("enc.w"));
  Tensor inf =
      MakeFloat32Tensor("dec.b", {1}, {std::numeric_limits<float>::infinity()});
  EXPECT_THAT(std::string(ToFloat32(inf).status().message()),
              HasSubstr("dec.b"));
}

TEST(Tensor, CheckedNumElementsCatchesOverflowAndNegatives) {
  EXPECT_EQ(CheckedNumElements({4096, 4096}, "x").value(), 4096 * 4096);
  EXPECT_EQ(CheckedNumElements({0, 5}, "x").value(), 0);
  EXPECT_FALSE(CheckedNumElements({1LL << 40, 1LL << 40}, "x").ok());
  EXPECT_FALSE(CheckedNumElements({-1, 2}, "x").ok());
}

TEST(StridedExtent, AViewMustLieWithinItsStoredBytes) {
  EXPECT_TRUE(CheckStridedExtent("w", {4, 3}, {3, 1}, 0, 4, 48).ok());
  EXPECT_TRUE(
      CheckStridedExtent("w", {3, 4}, {1, 3}, 0, 4, 48).ok());  // transposed
  EXPECT_TRUE(
      CheckStridedExtent("w", {0, 3}, {3, 1}, 1 << 20, 4, 0).ok());  // empty
  const absl::Status past =
      CheckStridedExtent("fc.weight", {4, 3}, {3, 1}, 1, 4, 48);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(past.message(),
            "tensor 'fc.weight' [4, 3] reaches past its stored data (52 bytes "
            "needed, 48 stored)");
  EXPECT_THAT(std::string(CheckStridedExtent("w", {2, 2}, {int64_t{1} << 62, 1},
                                             0, 8, 64)
                              .message()),
              ::testing::HasSubstr("more than 2^64"));
  EXPECT_FALSE(CheckStridedExtent("w", {2}, {-1}, 1, 4, 64).ok());
  EXPECT_FALSE(CheckStridedExtent("w", {2}, {1}, -1, 4, 64).ok());
}

}  // namespace
}  // namespace weightcast
