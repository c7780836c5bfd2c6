#include "common/checkpoint/safetensors.h"

#include <cstring>

#include "common/base/file.h"
#include "common/tensor/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

std::string Fixture(const std::string& name) { return std::string(WEIGHTCAST_FIXTURE_DIR "/") + name; }

// A safetensors file from a header text and data bytes.
std::vector<uint8_t> Build(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

std::string ErrorOf(const std::vector<uint8_t>& bytes) {
  auto model = ParseSafetensors(bytes, "bad.safetensors");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(model.status().message());
}

TEST(Safetensors, ReadsAPyTorchStateDict) {
  auto model = ReadSafetensorsFile(Fixture("mixed.safetensors"));
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::string> names;
  for (const Tensor& t : model->tensors) names.push_back(t.name);
  EXPECT_THAT(names, testing::ElementsAre("conv.weight", "conv.bias", "bn.weight", "bn.bias",
                                          "bn.running_mean", "bn.running_var",
                                          "bn.num_batches_tracked", "fc1.weight", "fc1.bias",
                                          "fc2.weight", "fc2.bias"));
  const Tensor& fc1 = model->tensors[7];
  EXPECT_EQ(fc1.shape, (std::vector<int64_t>{256, 8 * 26 * 26}));
  EXPECT_EQ(fc1.dtype, DType::kFloat32);
  const Tensor& counter = model->tensors[6];
  EXPECT_EQ(counter.dtype, DType::kInt64);
  EXPECT_EQ(ToFloat32(counter).value(), std::vector<float>{1.0f});
}

TEST(Safetensors, ReadsHalfBFloat16AndDoubleAsTheSameWeights) {
  auto model = ReadSafetensorsFile(Fixture("dtypes.safetensors"));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model->tensors.size(), 3u);
  const std::vector<float> f16 = ToFloat32(model->tensors[0]).value();
  const std::vector<float> bf16 = ToFloat32(model->tensors[1]).value();
  const std::vector<float> f64 = ToFloat32(model->tensors[2]).value();
  for (size_t i = 0; i < f64.size(); ++i) {
    EXPECT_NEAR(f16[i], f64[i], 1e-3);
    EXPECT_NEAR(bf16[i], f64[i], 1e-2);
  }
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  Model model;
  model.tensors.push_back(MakeFloat32Tensor("a", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  model.tensors.push_back(Tensor{"n", {}, DType::kInt64, std::vector<uint8_t>(8, 7)});
  model.tensors.push_back(MakeFloat32Tensor("empty", {0, 4}, {}));
  auto back = ParseSafetensors(SerializeSafetensors(model), "memory");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->tensors.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back->tensors[i].name, model.tensors[i].name);
    EXPECT_EQ(back->tensors[i].shape, model.tensors[i].shape);
    EXPECT_EQ(back->tensors[i].data, model.tensors[i].data);
  }
}

TEST(Safetensors, BadInputNamesTheFileAndTensor) {
  EXPECT_THAT(ErrorOf({1, 2, 3}), HasSubstr("bad.safetensors"));
  EXPECT_THAT(ErrorOf(Build("not json", 0)), HasSubstr("not a JSON object"));
  // Header length lying about the file size.
  std::vector<uint8_t> lying = Build("{}", 0);
  lying[0] = 0xff;
  EXPECT_THAT(ErrorOf(lying), HasSubstr("header length"));
  // Offsets beyond the data.
  EXPECT_THAT(ErrorOf(Build(R"({"fc.w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 8)),
              AllOf(HasSubstr("'fc.w'"), HasSubstr("outside")));
  // Storage shorter than the shape.
  EXPECT_THAT(ErrorOf(Build(R"({"fc.w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,16]}})", 16)),
              AllOf(HasSubstr("'fc.w'"), HasSubstr("does not match")));
  // A 2 GB+ tensor claimed by a small file.
  EXPECT_THAT(ErrorOf(Build(R"({"big":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,17179869184]}})", 16)),
              HasSubstr("'big'"));
  // Overflowing shape.
  EXPECT_THAT(ErrorOf(Build(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4)),
              HasSubstr("'x'"));
  // Names that repeat.
  EXPECT_THAT(ErrorOf(Build(R"({"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1)),
              AllOf(HasSubstr("'w'"), HasSubstr("more than once")));
  EXPECT_THAT(ErrorOf(Build(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8)),
              HasSubstr("unsupported dtype C64"));
  EXPECT_THAT(ErrorOf(Build(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
              HasSubstr("'w'"));
}

TEST(Safetensors, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSafetensorsFile("/nonexistent/model.safetensors").status().code(), absl::StatusCode::kNotFound);
}

TEST(Safetensors, TruncatedFixtureIsAnError) {
  std::vector<uint8_t> bytes = ReadFileBytes(Fixture("mixed.safetensors")).value();
  for (size_t keep : {size_t{0}, size_t{7}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    auto model = ParseSafetensors(absl::MakeConstSpan(bytes.data(), keep), "cut.safetensors");
    EXPECT_FALSE(model.ok()) << keep;
    EXPECT_THAT(std::string(model.status().message()), HasSubstr("cut.safetensors"));
  }
}

}  // namespace
}  // namespace weightcast
