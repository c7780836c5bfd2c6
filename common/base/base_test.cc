#include <atomic>
#include <thread>
#include <vector>

#include "common/base/args.h"
#include "common/base/file.h"
#include "common/base/names.h"
#include "common/base/parallel_for.h"
#include "common/base/printable.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

TEST(File, ReadsInChunksUpToTheEndOrUntilTold) {
  const std::string path = ::testing::TempDir() + "/file_chunks.bin";
  std::vector<uint8_t> bytes(2500);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  EXPECT_EQ(FileSize(path).value(), 2500u);
  std::vector<uint8_t> got;
  std::vector<size_t> sizes;
  ASSERT_TRUE(
      ReadFileInChunks(path, 1000, [&](absl::Span<const uint8_t> chunk) {
        sizes.push_back(chunk.size());
        got.insert(got.end(), chunk.begin(), chunk.end());
        return true;
      }).ok());
  EXPECT_EQ(got, bytes);
  EXPECT_EQ(sizes, (std::vector<size_t>{1000, 1000, 500}));
  int calls = 0;
  ASSERT_TRUE(ReadFileInChunks(path, 1000, [&](absl::Span<const uint8_t>) {
                return ++calls < 2;
              }).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(FileSize(path + ".missing").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadFileInChunks(path + ".missing", 1000,
                             [](absl::Span<const uint8_t>) { return true; })
                .code(),
            absl::StatusCode::kNotFound);
}

TEST(Sha256, MatchesKnownVector) {
  const std::string abc = "abc";
  Sha256Digest digest = Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(abc.data()), abc.size()));
  EXPECT_EQ(DigestToHex(digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // And back: the name to the raw bytes; anything but 64 lower-case hex digits
  // is no name.
  EXPECT_EQ(HexToRawDigest(DigestToHex(digest)),
            std::string(digest.begin(), digest.end()));
  EXPECT_EQ(
      HexToRawDigest(
          "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"),
      "");
  EXPECT_EQ(HexToRawDigest("abc"), "");
}

TEST(Sha256, IncrementalMatchesOneShot) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i * 7);
  Sha256Hasher hasher;
  hasher.Update(absl::MakeConstSpan(data).subspan(0, 333));
  hasher.Update(absl::MakeConstSpan(data).subspan(333));
  EXPECT_EQ(hasher.Finish(), Sha256(data));
}

TEST(ParallelFor, RunsEveryIndexOnce) {
  std::vector<std::atomic<int>> hits(1000);
  ASSERT_TRUE(ParallelFor(hits.size(), 4, [&](size_t i) {
                hits[i]++;
                return absl::OkStatus();
              }).ok());
  for (auto& hit : hits) EXPECT_EQ(hit.load(), 1);
}

TEST(ParallelFor, ReturnsAnErrorFromAnyIndex) {
  absl::Status status = ParallelFor(64, 3, [](size_t i) {
    return i == 37 ? absl::InvalidArgumentError("tile 37") : absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), testing::HasSubstr("tile 37"));
}

TEST(SharedParallelFor, RunsEveryIndexOnceWithHelpersLateOrNever) {
  std::vector<std::atomic<int>> hits(500);
  const auto count = [&](size_t i) {
    hits[i]++;
    return i == 321 ? absl::InvalidArgumentError("tile 321") : absl::OkStatus();
  };
  std::vector<std::thread> threads;
  absl::Status status = SharedParallelFor(
      hits.size(), 3,
      [&](std::function<void()> task) {
        threads.emplace_back(std::move(task));
      },
      count);
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (auto& hit : hits) EXPECT_EQ(hit.exchange(0), 1);
  // Tasks that run only after the call returned find nothing left to take.
  std::vector<std::function<void()>> queued;
  EXPECT_EQ(SharedParallelFor(
                hits.size(), 2,
                [&](std::function<void()> task) {
                  queued.push_back(std::move(task));
                },
                count)
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(queued.size(), 2u);
  for (auto& task : queued) task();
  for (auto& hit : hits) EXPECT_EQ(hit.load(), 1);
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int half, Half(x));
  ASSIGN_OR_RETURN(half, Half(half));
  return half;
}

TEST(StatusMacros, PropagateErrorsAndValues) {
  EXPECT_EQ(Quarter(8).value(), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Printable, EscapesControlCharactersAndBrokenUtf8AndKeepsTheRest) {
  EXPECT_EQ(Printable("v1.2_ok-\xc3\xa9\xe2\x82\xac"),
            "v1.2_ok-\xc3\xa9\xe2\x82\xac");  // é €: valid UTF-8
  EXPECT_EQ(Printable(std::string("a\x1b[2J\0b\n", 8)), "a\\x1b[2J\\x00b\\x0a");
  EXPECT_EQ(Printable("\xc2\x9b"
                      "31m"),
            "\\xc2\\x9b31m");                      // C1 CSI
  EXPECT_EQ(Printable("\xff\xc3"), "\\xff\\xc3");  // not UTF-8; a cut sequence
  EXPECT_EQ(Printable("\xc0\xaf"), "\\xc0\\xaf");  // overlong '/'
  EXPECT_EQ(Printable("back\\slash"),
            "back\\\\slash");  // escapes stay unambiguous
}

TEST(Printable, EchoIsBoundedAndMarked) {
  EXPECT_EQ(Echo("q22"), "'q22'");
  const std::string huge(7000000, 'm');
  const std::string echoed = Echo(huge);
  EXPECT_EQ(echoed,
            "'" + std::string(kMaxEchoBytes, 'm') + "'... (7000000 bytes)");
  const absl::Status status = CheckName("model name", huge + "/", 64);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(status.message().size(), 100u);
  EXPECT_LT(CheckName("model name", "a/" + huge, 1 << 30).message().size(),
            kMaxEchoBytes + 100);
}

}  // namespace
}  // namespace weightcast

namespace weightcast {
namespace {

const ArgSpec kSpec{{"--workers", "--cache-bytes", "-o", "--ratio"},
                    {"--int8"}};

absl::StatusOr<Args> ParseWords(std::vector<std::string> words,
                                ArgSpec spec = kSpec) {
  return Args::Parse(words, spec);
}

TEST(Args, ReadsDeclaredOptionsSwitchesAndPositionals) {
  auto args = ParseWords({"in.pt", "--workers", "3", "--int8", "-o", "out",
                          "--workers", "4", "more"});
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(args->positional(), testing::ElementsAre("in.pt", "more"));
  EXPECT_TRUE(args->Has("--int8"));
  EXPECT_FALSE(args->Has("--cache-bytes"));
  EXPECT_EQ(args->Get("-o"), "out");
  EXPECT_EQ(args->Get("--cache-bytes", "none"), "none");
  int workers = 0;
  EXPECT_TRUE(args->Int("--workers", 0, 8, &workers).ok());
  EXPECT_EQ(workers, 4);  // the last one counts
  uint64_t bytes = 7;
  EXPECT_TRUE(
      args->Int("--cache-bytes", uint64_t{0}, ~uint64_t{0}, &bytes).ok());
  EXPECT_EQ(bytes, 7u);  // absent: left alone
}

TEST(Args, RefusesUndeclaredOptionsMissingValuesAndOutOfRangeNumbers) {
  EXPECT_EQ(ParseWords({"--wrokers", "3"}).status().message(),
            "unknown option '--wrokers'");
  EXPECT_EQ(ParseWords({"in", "-o"}).status().message(), "-o needs a value");
  auto args =
      ParseWords({"--workers", "9", "--ratio", "nan", "--cache-bytes", "-1"});
  ASSERT_TRUE(args.ok());
  int workers = 1;
  EXPECT_EQ(args->Int("--workers", 0, 8, &workers).message(),
            "--workers needs a whole number within 0..8, not '9'");
  EXPECT_EQ(workers, 1);
  uint64_t bytes = 0;
  EXPECT_FALSE(
      args->Int("--cache-bytes", uint64_t{0}, ~uint64_t{0}, &bytes).ok());
  double ratio = 0.5;
  EXPECT_EQ(args->Number("--ratio", 0, &ratio).message(),
            "--ratio needs a number >= 0, not 'nan'");
  // A hostile option name is echoed bounded and printable.
  const std::string hostile = "--\x1b[2J" + std::string(10000, 'x');
  const absl::Status status = ParseWords({hostile}).status();
  EXPECT_LT(status.message().size(), 400u);
  EXPECT_EQ(status.message().find('\x1b'), std::string::npos);
}

TEST(Args, StopsAtTheFirstPositionalWhenAsked) {
  ArgSpec spec{{"--server"}, {}, /*stop_at_positional=*/true};
  std::vector<std::string> words = {"--server", "a:1", "pull", "--tier", "q"};
  auto args = Args::Parse(words, spec);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->consumed(), 2u);
  EXPECT_EQ(args->Get("--server"), "a:1");
  EXPECT_TRUE(args->positional().empty());
}

}  // namespace
}  // namespace weightcast
