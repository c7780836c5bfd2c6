#include "common/checkpoint/checkpoint_source.h"

#include <cmath>
#include <filesystem>

#include "common/checkpoint/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return FixtureDir() + "/" + name;
}

void ExpectSameAsWholeRead(const std::string& path, CheckpointFormat format) {
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());
  auto whole = ReadCheckpoint(path);
  ASSERT_THAT(whole, IsOk());
  EXPECT_EQ((*source)->format(), format);
  ASSERT_EQ((*source)->size(), whole->tensors.size());
  for (size_t i = 0; i < whole->tensors.size(); ++i) {
    const Tensor& expected = whole->tensors[i];
    EXPECT_EQ((*source)->headers()[i].name, expected.name);
    EXPECT_EQ((*source)->headers()[i].shape, expected.shape);
    EXPECT_TRUE((*source)->headers()[i].data.empty());
    auto read = (*source)->Read(i);
    ASSERT_THAT(read, IsOk());
    EXPECT_EQ(read->dtype, expected.dtype) << expected.name;
    EXPECT_EQ(read->data, expected.data) << expected.name;
  }
}

TEST(CheckpointSource, ReadsSafetensorsTensorByTensorAsAWholeRead) {
  ExpectSameAsWholeRead(Fixture("mixed.safetensors"),
                        CheckpointFormat::kSafetensors);
  ExpectSameAsWholeRead(Fixture("dtypes.safetensors"),
                        CheckpointFormat::kSafetensors);
}

// A torch.save archive is read a tensor at a time too: shared storages
// (tied weights, views of one base tensor), strided views, every dtype, empty
// tensors, a state_dict inside a training checkpoint.
TEST(CheckpointSource, ReadsTorchSaveTensorByTensorAsAWholeRead) {
  for (const char* name : {"cnn_bn.pt", "tied.pt", "views.pt", "dtypes.pt",
                           "zero_size.pt", "training.pt"}) {
    SCOPED_TRACE(name);
    ExpectSameAsWholeRead(Fixture(name), CheckpointFormat::kTorchSave);
  }
}

TEST(CheckpointSource, ReadsTorchScriptWhole) {
  ExpectSameAsWholeRead(Fixture("script.pt"), CheckpointFormat::kTorchScript);
}

// Damaged data in a torch.save archive surfaces when the tensor is read (as a
// safetensors file's does), naming the file, the tensor and what is wrong.
TEST(CheckpointSource, TorchSaveDataIsCheckedWhenTheTensorIsRead) {
  auto short_storage = CheckpointSource::Open(Fixture("short_storage.pt"));
  ASSERT_THAT(short_storage, IsOk());  // data.pkl alone is well formed
  EXPECT_THAT((*short_storage)->Read(0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("short_storage.pt"),
                             HasSubstr("fc1.weight"), HasSubstr("data/0"))));
  EXPECT_THAT(
      (*short_storage)->CheckData(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
  auto nan = CheckpointSource::Open(Fixture("nan.pt"));
  ASSERT_THAT(nan, IsOk());
  EXPECT_THAT((*nan)->CheckData(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("nan.pt"), HasSubstr("fc1.weight"),
                             HasSubstr("nan"))));
  EXPECT_THAT((*nan)->Read(1), IsOk());  // fc1.bias
}

// ReadRows of every tensor, a few rows at a time, put together again is Read().
void ExpectRowsAsWholeRead(const std::string& path) {
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());
  for (size_t i = 0; i < (*source)->size(); ++i) {
    const Tensor& header = (*source)->headers()[i];
    auto whole = (*source)->Read(i);
    ASSERT_THAT(whole, IsOk());
    const int64_t rows = header.shape.size() >= 2 ? header.shape[0] : 1;
    std::vector<uint8_t> joined;
    for (int64_t row = 0; row < rows; row += 3) {
      const int64_t n = std::min<int64_t>(3, rows - row);
      auto chunk = (*source)->ReadRows(i, row, n);
      ASSERT_THAT(chunk, IsOk());
      EXPECT_EQ(chunk->dtype, header.dtype);
      ASSERT_EQ(chunk->shape.size(), 2u);
      EXPECT_EQ(chunk->shape[0], n);
      EXPECT_EQ(chunk->NumElements() / n * rows, whole->NumElements());
      joined.insert(joined.end(), chunk->data.begin(), chunk->data.end());
    }
    EXPECT_EQ(joined, whole->data) << header.name;
    EXPECT_THAT((*source)->ReadRows(i, rows, 1),
                StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_THAT((*source)->ReadRows(i, -1, 1),
                StatusIs(absl::StatusCode::kOutOfRange));
    EXPECT_THAT((*source)->ReadRows(i, 0, rows + 1),
                StatusIs(absl::StatusCode::kOutOfRange));
  }
  EXPECT_THAT((*source)->ReadRows((*source)->size(), 0, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(CheckpointSource, ReadRowsPutTogetherIsTheWholeRead) {
  ExpectRowsAsWholeRead(Fixture("mixed.safetensors"));
  ExpectRowsAsWholeRead(Fixture("dtypes.safetensors"));
  ExpectRowsAsWholeRead(Fixture("cnn_bn.pt"));
  ExpectRowsAsWholeRead(Fixture("views.pt"));
}

TEST(CheckpointSource, ReadRowsNamesNaNInTheRowsRead) {
  const std::string path = FreshDir("source_rows_nan") + "/nan.safetensors";
  Model model;
  model.tensors.push_back(
      MakeFloat32Tensor("m", {3, 2}, {1, 2, 3, std::nanf(""), 5, 6}));
  ASSERT_THAT(WriteSafetensorsFile(model, path), IsOk());
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());
  EXPECT_THAT((*source)->ReadRows(0, 0, 1), IsOk());
  EXPECT_THAT((*source)->ReadRows(0, 2, 1), IsOk());
  EXPECT_THAT((*source)->ReadRows(0, 1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("'m'"))));
}

TEST(CheckpointSource, ReadNamesTheTensorHoldingNaN) {
  const std::string path = FreshDir("source_nan") + "/nan.safetensors";
  Model model;
  model.tensors.push_back(MakeFloat32Tensor("ok", {2}, {1.0f, 2.0f}));
  model.tensors.push_back(MakeFloat32Tensor("bad", {2}, {1.0f, std::nanf("")}));
  ASSERT_THAT(WriteSafetensorsFile(model, path), IsOk());
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());  // the header alone is well formed
  EXPECT_THAT((*source)->Read(0), IsOk());
  EXPECT_THAT((*source)->Read(1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("bad"))));
  EXPECT_THAT((*source)->CheckData(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("bad"))));
}

TEST(CheckpointSource, CheckDataFindsNaNInALaterChunkOfALargeTensor) {
  // Two chunks of bf16; the NaN at the very end is named as Read() names it.
  const std::string path = FreshDir("source_chunks") + "/big.safetensors";
  const size_t elements = CheckpointSource::kCheckChunkBytes;  // 2 bytes each
  Tensor big{"big.weight",
             {static_cast<int64_t>(elements / 64), 64},
             DType::kBFloat16,
             std::vector<uint8_t>(elements * 2, 0)};
  big.data[elements * 2 - 1] = 0x7f;  // the last element: 0x7fc0, a NaN
  big.data[elements * 2 - 2] = 0xc0;
  Model model;
  model.tensors.push_back(std::move(big));
  ASSERT_THAT(WriteSafetensorsFile(model, path), IsOk());
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());
  const absl::Status whole = (*source)->Read(0).status();
  EXPECT_THAT(whole, StatusIs(absl::StatusCode::kInvalidArgument,
                              HasSubstr("big.weight")));
  EXPECT_EQ((*source)->CheckData(), whole);
  model.tensors[0].data[elements * 2 - 1] = 0;  // now finite everywhere
  ASSERT_THAT(WriteSafetensorsFile(model, path), IsOk());
  EXPECT_THAT(CheckpointSource::Open(path).value()->CheckData(), IsOk());
}

TEST(CheckpointSource, AFileCutShortAfterOpeningIsDataLoss) {
  const std::string path = FreshDir("source_cut") + "/cut.safetensors";
  std::filesystem::copy_file(Fixture("mixed.safetensors"), path);
  auto source = CheckpointSource::Open(path);
  ASSERT_THAT(source, IsOk());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  const size_t last = (*source)->size() - 1;
  EXPECT_THAT((*source)->Read(last),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr((*source)->headers()[last].name)));
  EXPECT_THAT((*source)->CheckData(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(path)));
}

TEST(CheckpointSource, RefusesWhatReadCheckpointRefuses) {
  EXPECT_THAT(CheckpointSource::Open(Fixture("no-such.safetensors")),
              StatusIs(absl::StatusCode::kNotFound));
  const std::string path = FreshDir("source_short") + "/short.safetensors";
  std::filesystem::copy_file(Fixture("mixed.safetensors"), path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  EXPECT_THAT(
      CheckpointSource::Open(path),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside")));
  EXPECT_THAT(CheckpointSource::Open(Fixture("truncated.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("zip")));
  EXPECT_THAT(CheckpointSource::Open(Fixture("not_a_checkpoint.pt")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a checkpoint")));
}

}  // namespace
}  // namespace weightcast
