#include "common/checkpoint/safetensors_shards.h"

#include <filesystem>
#include <fstream>

#include "common/checkpoint/checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";

std::string Fixture(const std::string& name) {
  return FixtureDir() + "/" + name;
}

// A copy of the fixture folder (written by PyTorch) to break.
std::string CopyOfSharded(const std::string& name) {
  const std::string dir = FreshDir(name) + "/model";
  fs::copy(Fixture("sharded"), dir, fs::copy_options::recursive);
  return dir;
}

std::string IndexText(const std::string& dir) {
  std::ifstream in(dir + "/" + kSafetensorsIndexName);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteIndex(const std::string& dir, const std::string& text) {
  std::ofstream(dir + "/" + kSafetensorsIndexName, std::ios::trunc) << text;
}

void Replace(std::string* text, const std::string& from,
             const std::string& to) {
  const size_t at = text->find(from);
  ASSERT_NE(at, std::string::npos) << from;
  text->replace(at, from.size(), to);
}

TEST(SafetensorsShards, AFolderMergesIntoTheSameTensorsAsOneFile) {
  auto shards = OpenSafetensorsShards({Fixture("sharded")});
  ASSERT_THAT(shards, IsOk());
  EXPECT_EQ(shards->paths.size(), 2u);
  const std::string merged = FreshDir("shards_merge") + "/merged.safetensors";
  ASSERT_THAT(MergeSafetensorsShards(*shards, merged), IsOk());
  auto got = ReadCheckpoint(merged);
  auto expected = ReadCheckpoint(Fixture("mixed.safetensors"));
  ASSERT_THAT(got, IsOk());
  ASSERT_THAT(expected, IsOk());
  ASSERT_EQ(got->tensors.size(), expected->tensors.size());
  for (size_t i = 0; i < got->tensors.size(); ++i) {
    EXPECT_EQ(got->tensors[i].name, expected->tensors[i].name);
    EXPECT_EQ(got->tensors[i].shape, expected->tensors[i].shape);
    EXPECT_EQ(got->tensors[i].data, expected->tensors[i].data);
  }
  // The index file itself, or the shards named one by one, work as well.
  EXPECT_THAT(
      OpenSafetensorsShards({Fixture("sharded/") + kSafetensorsIndexName}),
      IsOk());
  EXPECT_THAT(OpenSafetensorsShards({Fixture("sharded/") + kShard1,
                                     Fixture("sharded/") + kShard2}),
              IsOk());
}

TEST(SafetensorsShards, AMissingShardIsNamed) {
  const std::string dir = CopyOfSharded("shards_missing");
  fs::remove(dir + "/" + kShard2);
  EXPECT_THAT(OpenSafetensorsShards({dir}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(kShard2)));
}

TEST(SafetensorsShards, ATensorInTwoShardsIsNamed) {
  const std::string dir = FreshDir("shards_duplicate");
  EXPECT_THAT(
      OpenSafetensorsShards(
          {Fixture("sharded/") + kShard1, Fixture("sharded/") + kShard1}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is also in")));
  // With an index: a tensor the index places in the other shard.
  const std::string copy = CopyOfSharded("shards_duplicate_index");
  fs::copy_file(copy + "/" + kShard1, copy + "/" + kShard2,
                fs::copy_options::overwrite_existing);
  EXPECT_THAT(
      OpenSafetensorsShards({copy}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is also in")));
}

TEST(SafetensorsShards, AnIndexNamingATensorNoShardHoldsIsRefused) {
  const std::string dir = CopyOfSharded("shards_phantom");
  std::string index = IndexText(dir);
  Replace(&index, "\"weight_map\": {",
          std::string("\"weight_map\": {\"lm_head.weight\": \"") + kShard1 +
              "\", ");
  WriteIndex(dir, index);
  EXPECT_THAT(OpenSafetensorsShards({dir}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("lm_head.weight"),
                             HasSubstr("does not hold it"))));
}

TEST(SafetensorsShards, AShardTensorTheIndexDoesNotNameIsRefused) {
  const std::string dir = CopyOfSharded("shards_unnamed");
  std::string index = IndexText(dir);
  Replace(&index, "\"conv.weight\"", "\"conv.renamed\"");
  WriteIndex(dir, index);
  EXPECT_THAT(
      OpenSafetensorsShards({dir}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("conv.weight")));
}

TEST(SafetensorsShards, ShardNamesStayInsideTheFolder) {
  for (const std::string& name :
       {std::string("../mixed.safetensors"), std::string("/etc/passwd"),
        std::string(".."), std::string("x.bin"), std::string(300, 'a')}) {
    const std::string dir = CopyOfSharded("shards_traversal");
    std::string index = IndexText(dir);
    Replace(&index, std::string("\"") + kShard1 + "\"",
            std::string("\"") + name + "\"");
    WriteIndex(dir, index);
    EXPECT_THAT(OpenSafetensorsShards({dir}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(kSafetensorsIndexName)))
        << name;
  }
}

TEST(SafetensorsShards, AMalformedIndexIsRefused) {
  for (const std::string& text :
       {std::string("[]"), std::string("{\"weight_map\": []}"),
        std::string("{\"weight_map\": {}}"),
        std::string("{\"weight_map\": {\"a\": 7}}"),
        std::string("{\"weight_map\": {\"a\": \"") + kShard1 + "\", \"a\": \"" +
            kShard1 + "\"}}",
        std::string("{\"weight_map\": ")}) {
    const std::string dir = CopyOfSharded("shards_malformed");
    WriteIndex(dir, text);
    EXPECT_THAT(OpenSafetensorsShards({dir}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(kSafetensorsIndexName)))
        << text;
  }
  const std::string dir = FreshDir("shards_no_index");
  EXPECT_THAT(
      OpenSafetensorsShards({dir}),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr(kSafetensorsIndexName)));
}

TEST(SafetensorsShards, AnOversizedIndexIsRefusedUnread) {
  const std::string dir = CopyOfSharded("shards_huge_index");
  fs::resize_file(dir + "/" + kSafetensorsIndexName,
                  kMaxSafetensorsIndexBytes + 1);
  EXPECT_THAT(
      OpenSafetensorsShards({dir}),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("larger than")));
}

}  // namespace
}  // namespace weightcast
