#include "common/checkpoint/safetensors.h"

#include <cstring>

#include "common/base/file.h"
#include "common/tensor/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return FixtureDir() + "/" + name;
}

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
  EXPECT_THAT(names,
              testing::ElementsAre(
                  "conv.weight", "conv.bias", "bn.weight", "bn.bias",
                  "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                  "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"));
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
  model.tensors.push_back(
      MakeFloat32Tensor("a", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6}));
  model.tensors.push_back(
      Tensor{"n", {}, DType::kInt64, std::vector<uint8_t>(8, 7)});
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
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"fc.w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})",
          8)),
      AllOf(HasSubstr("'fc.w'"), HasSubstr("outside")));
  // Storage shorter than the shape.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"fc.w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,16]}})",
          16)),
      AllOf(HasSubstr("'fc.w'"), HasSubstr("does not match")));
  // A 2 GB+ tensor claimed by a small file.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"big":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,17179869184]}})",
          16)),
      HasSubstr("'big'"));
  // Overflowing shape.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
          4)),
      HasSubstr("'x'"));
  // Names that repeat.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})",
          1)),
      AllOf(HasSubstr("'w'"), HasSubstr("more than once")));
  EXPECT_THAT(
      ErrorOf(Build(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})",
                    8)),
      HasSubstr("unsupported dtype C64"));
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
      HasSubstr("'w'"));
}

// As the reference implementation: tensors' byte ranges tile the data exactly.
TEST(Safetensors, OverlappingTensorsAreAnErrorNamingBoth) {
  // fc.bias reads the last 16 bytes of fc.weight: two tensors, one region.
  const std::string overlap = ErrorOf(Build(
      R"({"fc.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"fc.bias":{"dtype":"F32","shape":[4],"data_offsets":[48,64]}})",
      64));
  EXPECT_THAT(overlap,
              AllOf(HasSubstr("bad.safetensors"), HasSubstr("'fc.bias'"),
                    HasSubstr("'fc.weight'"), HasSubstr("overlap")));
  // The same range twice; and a zero-size tensor inside another.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})",
          8)),
      AllOf(HasSubstr("'a'"), HasSubstr("'b'"), HasSubstr("overlap")));
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"a":{"dtype":"I8","shape":[8],"data_offsets":[0,8]},"z":{"dtype":"I8","shape":[0],"data_offsets":[4,4]}})",
          8)),
      AllOf(HasSubstr("'z'"), HasSubstr("'a'"), HasSubstr("overlap")));
}

TEST(Safetensors, BytesNoTensorCoversAreAnError) {
  // Before the first tensor: named by the tensor after the hole.
  EXPECT_THAT(
      ErrorOf(
          Build(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}})", 8)),
      AllOf(HasSubstr("'a'"), HasSubstr("hole"), HasSubstr("[0, 4)")));
  // Between two tensors.
  EXPECT_THAT(
      ErrorOf(Build(
          R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}})",
          8)),
      AllOf(HasSubstr("'b'"), HasSubstr("hole"), HasSubstr("[2, 4)"),
            HasSubstr("after tensor 'a'")));
  // After the last.
  EXPECT_THAT(
      ErrorOf(
          Build(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 7)),
      AllOf(HasSubstr("the last 3 data bytes"), HasSubstr("after tensor 'a'")));
  EXPECT_THAT(ErrorOf(Build("{}", 5)),
              HasSubstr("the last 5 data bytes belong to no tensor"));
}

TEST(Safetensors, ZeroSizeTensorsMaySitWhereAnotherStartsOrAtTheEnd) {
  auto model = ParseSafetensors(
      Build(
          R"({"b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"I8","shape":[0],"data_offsets":[0,0]},)"
          R"("c":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}})",
          4),
      "zero.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model->tensors.size(), 3u);
  EXPECT_EQ(model->tensors[0].name, "a");  // by (begin, end)
  EXPECT_EQ(model->tensors[1].name, "b");
  EXPECT_EQ(model->tensors[2].name, "c");
  EXPECT_EQ(model->tensors[1].data.size(), 4u);
}

TEST(Safetensors, MissingFileIsNotFound) {
  EXPECT_EQ(
      ReadSafetensorsFile("/nonexistent/model.safetensors").status().code(),
      absl::StatusCode::kNotFound);
}

TEST(Safetensors, TruncatedFixtureIsAnError) {
  std::vector<uint8_t> bytes =
      ReadFileBytes(Fixture("mixed.safetensors")).value();
  for (size_t keep : {size_t{0}, size_t{7}, size_t{100}, bytes.size() / 2,
                      bytes.size() - 1}) {
    auto model = ParseSafetensors(absl::MakeConstSpan(bytes.data(), keep),
                                  "cut.safetensors");
    EXPECT_FALSE(model.ok()) << keep;
    EXPECT_THAT(std::string(model.status().message()),
                HasSubstr("cut.safetensors"));
  }
}

}  // namespace
}  // namespace weightcast
