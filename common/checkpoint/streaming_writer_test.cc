#include "common/checkpoint/streaming_writer.h"

#include <filesystem>
#include <thread>

#include "common/base/file.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/torch_save_archive.h"
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

TEST(CheckpointStreamWriter,
     TensorsInAnyOrderFromThreadsGiveTheSerializedBytes) {
  const std::string dir = FreshDir("streaming_writer_order");
  const Model model = ThreeTensors();
  auto writer =
      CheckpointStreamWriter::Create(dir + "/m.safetensors", LayoutOf(model));
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

TEST(CheckpointStreamWriter, ATensorThatDiffersFromTheLayoutIsDataLoss) {
  const std::string dir = FreshDir("streaming_writer_mismatch");
  const Model model = ThreeTensors();
  auto writer =
      CheckpointStreamWriter::Create(dir + "/m.safetensors", LayoutOf(model));
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

TEST(CheckpointStreamWriter, ShardsHoldAtMostTheirBytesAndTheIndexNamesEach) {
  const std::string dir = FreshDir("streaming_writer_shards");
  const Model model = ThreeTensors();  // 48, 16 and 8 bytes of data
  auto writer = CheckpointStreamWriter::Create(dir + "/out", LayoutOf(model),
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

TEST(CheckpointStreamWriter, ADuplicateNameOrAWrongSizeIsInvalid) {
  const std::string dir = FreshDir("streaming_writer_invalid");
  std::vector<TensorLayout> layout = LayoutOf(ThreeTensors());
  layout.push_back(layout[0]);
  EXPECT_THAT(
      CheckpointStreamWriter::Create(dir + "/m.safetensors", layout).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
  layout.pop_back();
  layout[1].bytes = 15;
  EXPECT_THAT(
      CheckpointStreamWriter::Create(dir + "/m.safetensors", layout).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.bias")));
}

// A .pt output streamed in any order, with and without ZIP64 fields: libtorch
// (torch.load's reader) reads the same tensors back, and the whole-model
// writer gives the same bytes.
TEST(CheckpointStreamWriter, TorchSaveOutputsAreReadBackByLibtorch) {
  const std::string dir = FreshDir("streaming_writer_pt");
  Model model = ThreeTensors();
  model.tensors.push_back(Filled("emb.weight", DType::kBFloat16, {3, 5}, 4));
  model.tensors.push_back(Filled("q.weight", DType::kInt8, {2, 2, 3}, 5));
  model.tensors.push_back(Filled("mask", DType::kBool, {0}, 6));
  for (const bool zip64 : {false, true}) {
    SCOPED_TRACE(zip64 ? "zip64" : "zip");
    const std::string path = dir + (zip64 ? "/m64.pt" : "/m.pt");
    auto writer = CheckpointStreamWriter::Create(path, LayoutOf(model),
                                                 /*shard_bytes=*/0, zip64);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (size_t k = model.tensors.size(); k-- > 0;)
      ASSERT_THAT((*writer)->Write(model.tensors[k]), IsOk());
    ASSERT_THAT((*writer)->Commit(), IsOk());
    auto read = ReadCheckpoint(path);
    ASSERT_TRUE(read.ok()) << read.status();
    ASSERT_EQ(read->tensors.size(), model.tensors.size());
    for (size_t k = 0; k < model.tensors.size(); ++k) {
      const Tensor& want = model.tensors[k];
      const Tensor& got = read->tensors[k];
      EXPECT_EQ(got.name, want.name);
      EXPECT_EQ(got.dtype, want.dtype) << want.name;
      EXPECT_EQ(got.shape, want.shape) << want.name;
      EXPECT_EQ(got.data, want.data) << want.name;
    }
  }
  std::vector<RebuiltTensor> rebuilt;
  for (const Tensor& t : model.tensors)
    rebuilt.push_back({t.name, t.shape, std::nullopt, t});
  // kInt8: tensors that are not int8 go out as stored (no bfloat16 widening).
  ASSERT_THAT(WriteCheckpoint(rebuilt, OutputKind::kInt8, dir + "/whole.pt"),
              IsOk());
  EXPECT_EQ(ReadFileBytes(dir + "/whole.pt").value(),
            ReadFileBytes(dir + "/m.pt").value());
}

TEST(TorchSaveArchive, Crc32IsZips) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32(0, reinterpret_cast<const uint8_t*>(check.data()), 9),
            0xCBF43926u);
  // Continued over parts: the same.
  const uint32_t first =
      Crc32(0, reinterpret_cast<const uint8_t*>(check.data()), 4);
  EXPECT_EQ(Crc32(first, reinterpret_cast<const uint8_t*>(check.data()) + 4, 5),
            0xCBF43926u);
}

TEST(TorchSaveArchive, RecordDataIsAlignedAndShardingIsRefused) {
  const Model model = ThreeTensors();
  auto archive = TorchSaveArchive::Create(LayoutOf(model));
  ASSERT_TRUE(archive.ok()) << archive.status();
  for (size_t k = 0; k < model.tensors.size(); ++k)
    EXPECT_EQ(archive->data_offset(k) % 64, 0u);
  EXPECT_THAT(
      CheckpointStreamWriter::Create(
          FreshDir("streaming_writer_pt_shards") + "/m.pt", LayoutOf(model),
          /*shard_bytes=*/1024)
          .status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("safetensors")));
  std::vector<TensorLayout> bad = LayoutOf(model);
  bad[0].bytes += 1;
  EXPECT_THAT(
      TorchSaveArchive::Create(bad).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
}

}  // namespace
}  // namespace weightcast
