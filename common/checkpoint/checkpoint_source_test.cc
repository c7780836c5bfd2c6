#include "common/checkpoint/checkpoint_source.h"

#include <cmath>
#include <filesystem>

#include "common/checkpoint/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return std::string(WEIGHTCAST_FIXTURE_DIR "/") + name;
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

TEST(CheckpointSource, ReadsTorchSaveWhole) {
  ExpectSameAsWholeRead(Fixture("cnn_bn.pt"), CheckpointFormat::kTorchSave);
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
}

}  // namespace
}  // namespace weightcast
