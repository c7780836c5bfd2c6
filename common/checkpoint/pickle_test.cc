#include "common/checkpoint/pickle.h"

#include <random>

#include "absl/container/flat_hash_map.h"
#include "common/checkpoint/libtorch_io.h"
#include "common/checkpoint/torch_checkpoint.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using namespace std::string_literals;  // "..."s keeps embedded NUL bytes

std::vector<uint8_t> Bytes(const std::string& s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

// A pickle of {key: tensor(storage "0", FloatStorage, numel, shape [n]), ...}
// written by hand; `storages[i]` names key i's storage instead of "0".
std::string StateDictPickle(const std::vector<std::string>& keys, int64_t numel,
                            int64_t n,
                            const std::vector<std::string>& storages = {}) {
  auto u32 = [](uint32_t v) {
    return std::string(reinterpret_cast<const char*>(&v), 4);
  };
  std::string p = "\x80\x02}(";
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    const std::string storage = i < storages.size() ? storages[i] : "0";
    p += "X" + u32(key.size()) + key;
    p += "ctorch._utils\n_rebuild_tensor_v2\n(";
    // numel as BININT, or as an 8-byte LONG1 past 31 bits.
    const std::string numel_op =
        numel <= INT32_MAX
            ? "J" + u32(static_cast<uint32_t>(numel))
            : "\x8a\x08"s +
                  std::string(reinterpret_cast<const char*>(&numel), 8);
    p += "(X" + u32(7) + "storagectorch\nFloatStorage\nX" +
         u32(storage.size()) + storage + "X" + u32(3) + "cpu" + numel_op + "tQ";
    p += "K\x00"s;                                      // offset 0
    p += "J" + u32(static_cast<uint32_t>(n)) + "\x85";  // size (n,)
    p += "K\x01\x85";                                   // stride (1,)
    p += "\x89}tR";  // requires_grad False, hooks {}
  }
  p += "u.";
  return p;
}

class FakeRecords : public RecordReader {
 public:
  absl::flat_hash_map<std::string, std::vector<uint8_t>> records;
  bool HasRecord(const std::string& name) override {
    return records.contains(name);
  }
  absl::StatusOr<std::vector<uint8_t>> ReadRecord(
      const std::string& name) override {
    ++reads[name];
    return records.at(name);
  }
  absl::flat_hash_map<std::string, int> reads;
};

TEST(Pickle, ReadsAHandWrittenStateDict) {
  FakeRecords archive;
  archive.records["data.pkl"] = Bytes(StateDictPickle({"a", "b"}, 4, 4));
  archive.records["data/0"] = std::vector<uint8_t>(16, 0);
  auto model = ReadTorchSave(archive, "fake.pt");
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ(model->tensors.size(), 2u);
  EXPECT_EQ(model->tensors[1].name, "b");
}

TEST(Pickle, NamesThatRepeatAreAnError) {
  FakeRecords archive;
  archive.records["data.pkl"] = Bytes(StateDictPickle({"w", "w"}, 4, 4));
  archive.records["data/0"] = std::vector<uint8_t>(16, 0);
  auto model = ReadTorchSave(archive, "fake.pt");
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("fake.pt"), HasSubstr("'w'"),
                    HasSubstr("more than once")));
}

TEST(Pickle, ViewBeyondItsStorageIsAnError) {
  FakeRecords archive;
  archive.records["data.pkl"] = Bytes(StateDictPickle({"fc.weight"}, 4, 8));
  archive.records["data/0"] = std::vector<uint8_t>(16, 0);
  auto model = ReadTorchSave(archive, "fake.pt");
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("'fc.weight'"), HasSubstr("storage holds 4")));
}

TEST(Pickle, HugeStorageClaimOnASmallRecordIsAnError) {
  FakeRecords archive;
  const int64_t huge = 1u << 30;  // 4 GB of float32
  archive.records["data.pkl"] = Bytes(StateDictPickle({"big"}, huge, huge));
  archive.records["data/0"] = std::vector<uint8_t>(64, 0);
  auto model = ReadTorchSave(archive, "small.pt");
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("'big'"), HasSubstr("64 bytes")));
}

// A storage claiming more elements than 64 bits of bytes can count would wrap
// the record-size check to a few bytes; it is refused by name instead.
TEST(Pickle, StorageSizeOverflowingSixtyFourBitsIsAnError) {
  FakeRecords archive;
  const int64_t wraps = (int64_t{1} << 62) + 1;  // x 4 bytes = 2^64 + 4
  archive.records["data.pkl"] = Bytes(StateDictPickle({"wrap"}, wraps, 4));
  archive.records["data/0"] = std::vector<uint8_t>(4, 0);
  auto model = ReadTorchSave(archive, "wrap.pt");
  EXPECT_THAT(std::string(model.status().message()),
              AllOf(HasSubstr("wrap.pt"), HasSubstr("overflows 64 bits")));
}

// Views of one storage in a row read it once, and so do views alternating
// between two storages (the reader keeps kKeptStorages); views cycling through
// three storages would read one again for every tensor: past
// kMaxStorageRereads times the bytes stored, the archive is refused before
// anything is read.
TEST(Pickle, InterleavedViewsOfSharedStoragesAreBounded) {
  std::vector<std::string> keys, alternating, cycling;
  for (int i = 0; i < 15; ++i) {
    keys.push_back("t" + std::to_string(i));
    alternating.push_back(i % 2 == 0 ? "a" : "b");
    cycling.push_back(std::string(1, static_cast<char>('a' + i % 3)));
  }
  FakeRecords archive;
  for (const char* key : {"data/0", "data/a", "data/b", "data/c"})
    archive.records[key] = std::vector<uint8_t>(400, 0);
  archive.records["data.pkl"] = Bytes(StateDictPickle(keys, 100, 100));
  auto shared = ReadTorchSave(archive, "shared.pt");
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->tensors.size(), 15u);
  archive.records["data.pkl"] =
      Bytes(StateDictPickle(keys, 100, 100, alternating));
  auto two = ReadTorchSave(archive, "alternating.pt");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(archive.reads["data/a"], 1);
  EXPECT_EQ(archive.reads["data/b"], 1);
  archive.records["data.pkl"] = Bytes(StateDictPickle(keys, 100, 100, cycling));
  auto three = ReadTorchSave(archive, "cycling.pt");
  EXPECT_THAT(std::string(three.status().message()),
              AllOf(HasSubstr("cycling.pt"), HasSubstr("interleave"),
                    HasSubstr("6000 bytes of the 1200 stored")));
  EXPECT_EQ(archive.reads["data/c"], 0);
  // Tied weights at both ends around tensors of their own are read.
  archive.records["data/e"] = std::vector<uint8_t>(400, 0);
  archive.records["data.pkl"] = Bytes(StateDictPickle(
      {"embed", "mid", "mid2", "head"}, 100, 100, {"a", "b", "e", "a"}));
  EXPECT_TRUE(ReadTorchSave(archive, "tied.pt").ok());
}

// Rows read a chunk at a time, two tensors' chunks interleaved (two encode
// jobs), read each storage record once, and put together are the tensors.
TEST(Pickle, RowsOfTwoTensorsReadEachRecordOnce) {
  FakeRecords archive;
  archive.records["data.pkl"] =
      Bytes(StateDictPickle({"a", "b"}, 64, 64, {"sa", "sb"}));
  for (const char* key : {"data/sa", "data/sb"}) {
    std::vector<uint8_t>& record = archive.records[key];
    for (int i = 0; i < 64 * 4; ++i) record.push_back(static_cast<uint8_t>(i));
  }
  TorchSaveReader reader(archive, "rows.pt",
                         IndexTorchSave(archive, "rows.pt").value());
  // A 1-D tensor is one row: its rows are the whole tensor.
  std::vector<uint8_t> a = reader.ReadRows(0, 0, 1).value();
  std::vector<uint8_t> b = reader.ReadRows(1, 0, 1).value();
  EXPECT_EQ(a, archive.records["data/sa"]);
  EXPECT_EQ(b, archive.records["data/sb"]);
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(reader.ReadRows(0, 0, 1).value(), a);
    EXPECT_EQ(reader.ReadRows(1, 0, 1).value(), b);
  }
  EXPECT_EQ(reader.Read(0).value().data, a);
  EXPECT_EQ(archive.reads["data/sa"], 1);
  EXPECT_EQ(archive.reads["data/sb"], 1);
}

TEST(Pickle, UnknownOpcodesAndTruncationAreErrors) {
  EXPECT_THAT(
      std::string(
          ReadPickle(Bytes("\x80\x02\xff."), "x.pt").status().message()),
      AllOf(HasSubstr("x.pt"), HasSubstr("opcode 0xff"), HasSubstr("byte 2")));
  EXPECT_THAT(
      std::string(ReadPickle(Bytes("\x80\x02X\x10\x00\x00\x00"s + "ab"), "x.pt")
                      .status()
                      .message()),
      HasSubstr("truncated"));
  EXPECT_THAT(
      std::string(ReadPickle(Bytes("h\x05."), "x.pt").status().message()),
      HasSubstr("memo 5"));
  EXPECT_THAT(std::string(ReadPickle(Bytes("."), "x.pt").status().message()),
              HasSubstr("underflow"));
}

TEST(Pickle, ArbitraryGlobalsAreNamedNeverRun) {
  // os.system('echo hi') as a pickle: the reader records an object and runs
  // nothing.
  auto value = ReadPickle(
      Bytes("cos\nsystem\n(X\x07\x00\x00\x00"s + "echo hitR."), "evil.pt");
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->root->Describe(), "object os.system");
  FakeRecords archive;
  archive.records["data.pkl"] =
      Bytes("cos\nsystem\n(X\x07\x00\x00\x00"s + "echo hitR.");
  EXPECT_THAT(std::string(ReadTorchSave(archive, "evil.pt").status().message()),
              AllOf(HasSubstr("evil.pt"), HasSubstr("no state_dict"),
                    HasSubstr("object os.system")));
}

// Fuzz-style: truncations and bit flips of a real torch.save pickle give an
// error or a value, never a crash (ASan in scripts/test --asan).
TEST(Pickle, DamagedRealPicklesNeverCrash) {
  auto archive = OpenTorchArchive(FixtureDir() + "/training.pt");
  ASSERT_TRUE(archive.ok()) << archive.status();
  const std::vector<uint8_t> pickle =
      (*archive)->ReadRecord("data.pkl").value();
  ASSERT_TRUE(ReadPickle(pickle, "training.pt").ok());
  for (size_t n = 0; n < pickle.size(); n += 5) {
    EXPECT_FALSE(ReadPickle(absl::MakeConstSpan(pickle.data(), n), "cut").ok())
        << n;
  }
  std::mt19937 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<uint8_t> damaged = pickle;
    damaged[rng() % damaged.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    auto value = ReadPickle(damaged, "flip");
    if (value.ok()) (void)FindStateDict(value->root, "flip");
  }
}

}  // namespace
}  // namespace weightcast
