#include "common/checkpoint/streaming_writer.h"

#include <filesystem>
#include <thread>

#include "common/base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

Tensor Filled(const std::string& name, DType dtype, std::vector<int64_t> shape,
              uint8_t seed) {
  Tensor t{name, std::move(shape), dtype, {}};
  t.data.resize(t.NumElements() * DTypeSize(dtype));
  for (size_t i = 0; i < t.data.size(); ++i)
    t.data[i] = static_cast<uint8_t>(seed + i * 7);
  return t;
}

Model ThreeTensors() {
  Model model;
  model.tensors.push_back(Filled("fc1.weight", DType::kFloat32, {4, 3}, 1));
  model.tensors.push_back(Filled("fc1.bias", DType::kFloat32, {4}, 2));
  model.tensors.push_back(
      Filled("bn.num_batches_tracked", DType::kInt64, {}, 3));
  return model;
}

std::vector<TensorLayout> LayoutOf(const Model& model) {
  std::vector<TensorLayout> layout;
  for (const Tensor& t : model.tensors)
    layout.push_back({t.name, t.dtype, t.shape, t.data.size()});
  return layout;
}

TEST(SafetensorsStreamWriter,
     TensorsInAnyOrderFromThreadsGiveTheSerializedBytes) {
  const std::string dir = FreshDir("streaming_writer_order");
  const Model model = ThreeTensors();
  auto writer =
      SafetensorsStreamWriter::Create(dir + "/m.safetensors", LayoutOf(model));
  ASSERT_TRUE(writer.ok()) << writer.status();
  std::thread last(
      [&] { EXPECT_THAT((*writer)->Write(model.tensors[2]), IsOk()); });
  EXPECT_THAT((*writer)->Write(model.tensors[1]), IsOk());
  EXPECT_THAT((*writer)->Write(model.tensors[0]), IsOk());
  last.join();
  EXPECT_FALSE(std::filesystem::exists(dir + "/m.safetensors"));
  ASSERT_THAT((*writer)->Commit(), IsOk());
  EXPECT_EQ(ReadFileBytes(dir + "/m.safetensors").value(),
            SerializeSafetensors(model));
}

TEST(SafetensorsStreamWriter, ATensorThatDiffersFromTheLayoutIsDataLoss) {
  const std::string dir = FreshDir("streaming_writer_mismatch");
  const Model model = ThreeTensors();
  auto writer =
      SafetensorsStreamWriter::Create(dir + "/m.safetensors", LayoutOf(model));
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_THAT((*writer)->Write(Filled("fc1.bias", DType::kFloat32, {5}, 0)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("fc1.bias")));
  EXPECT_THAT((*writer)->Write(Filled("other", DType::kFloat32, {4}, 0)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("other")));
  EXPECT_THAT((*writer)->Write(model.tensors[0]), IsOk());
  EXPECT_THAT(
      (*writer)->Commit(),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("fc1.bias")));
  writer->reset();  // not committed: nothing left behind
  EXPECT_FALSE(std::filesystem::exists(dir + "/m.safetensors.tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/m.safetensors"));
}

TEST(SafetensorsStreamWriter, ShardsHoldAtMostTheirBytesAndTheIndexNamesEach) {
  const std::string dir = FreshDir("streaming_writer_shards");
  const Model model = ThreeTensors();  // 48, 16 and 8 bytes of data
  auto writer = SafetensorsStreamWriter::Create(dir + "/out", LayoutOf(model),
                                                /*shard_bytes=*/40);
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ((*writer)->shards(), 2);  // [fc1.weight] (alone: over 40), [rest]
  for (const Tensor& t : model.tensors)
    EXPECT_THAT((*writer)->Write(t), IsOk());
  ASSERT_THAT((*writer)->Commit(), IsOk());
  Model first, second;
  first.tensors = {model.tensors[0]};
  second.tensors = {model.tensors[1], model.tensors[2]};
  EXPECT_EQ(
      ReadFileBytes(dir + "/out/model-00001-of-00002.safetensors").value(),
      SerializeSafetensors(first));
  EXPECT_EQ(
      ReadFileBytes(dir + "/out/model-00002-of-00002.safetensors").value(),
      SerializeSafetensors(second));
  const std::vector<uint8_t> index =
      ReadFileBytes(dir + "/out/model.safetensors.index.json").value();
  const std::string text(index.begin(), index.end());
  EXPECT_THAT(text, HasSubstr("\"total_size\": 72"));
  EXPECT_THAT(text,
              HasSubstr("\"fc1.bias\": \"model-00002-of-00002.safetensors\""));
}

TEST(SafetensorsStreamWriter, ADuplicateNameOrAWrongSizeIsInvalid) {
  const std::string dir = FreshDir("streaming_writer_invalid");
  std::vector<TensorLayout> layout = LayoutOf(ThreeTensors());
  layout.push_back(layout[0]);
  EXPECT_THAT(
      SafetensorsStreamWriter::Create(dir + "/m.safetensors", layout).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
  layout.pop_back();
  layout[1].bytes = 15;
  EXPECT_THAT(
      SafetensorsStreamWriter::Create(dir + "/m.safetensors", layout).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.bias")));
}

}  // namespace
}  // namespace weightcast
