#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/blob_store.h"
#include "server/storage/database.h"
#include "server/storage/postgres.h"
#include "server/storage/registry.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/postgres_process.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

VersionRecord Version(const std::string& label) {
  VersionRecord v;
  v.model = "mlp";
  v.version = label;
  v.source_sha256 = std::string(64, 'a');
  v.ladder = "lossless,q27";
  v.tensors = {{"fc.weight", {4, 4}, "float32", "int8"}};
  return v;
}

// The registry tests run against both engines: SQLite in a fresh directory,
// and a fresh database on a real PostgreSQL server the test binary starts.
class RegistryTest : public ::testing::TestWithParam<std::string> {
 protected:
  // Where a new, empty registry lives: a SQLite path or a postgresql:// URL.
  // The directory is the engine's own: ctest runs the two variants of a test
  // at once, and a fresh directory is emptied first.
  std::string Location(const std::string& name) {
    absl::StatusOr<std::string> url = FreshRegistryLocation(
        GetParam(), FreshDir(absl::StrCat(name, "_", GetParam())) + "/r.db",
        name);
    EXPECT_THAT(url, IsOk());
    return url.value_or("postgresql://unavailable");
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, RegistryTest,
                         ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST_P(RegistryTest, AddsFindsAndRejectsDuplicateVersions) {
  auto registry = Registry::Open(Location("registry1"));
  ASSERT_TRUE(registry.ok()) << registry.status();
  ASSERT_TRUE((*registry)->AddVersion(Version("v1"), {"lossless", "q27"}).ok());
  ASSERT_TRUE((*registry)->AddVersion(Version("v2"), {"lossless", "q27"}).ok());
  auto duplicate = (*registry)->AddVersion(Version("v1"), {"lossless"});
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(duplicate.status().message()), HasSubstr("'v1'"));
  EXPECT_EQ((*registry)->GetVersion("mlp", "latest")->version, "v2");
  EXPECT_EQ((*registry)->GetVersion("mlp", "v1")->tensors[0].shape,
            (std::vector<int64_t>{4, 4}));
  EXPECT_EQ((*registry)->GetVersion("cnn", "latest").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*registry)->GetVersion("mlp", "v9").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(RegistryTest, TiersSurviveReopenAndEncodingResets) {
  const std::string path = Location("registry2");
  int64_t id = 0;
  {
    auto registry = Registry::Open(path).value();
    id = registry->AddVersion(Version("v1"), {"lossless", "q27"}).value();
    LayerRecord layer{"fc.weight",
                      std::string(64, 'b'),
                      100,
                      LayerCodec::kZstdInt8,
                      std::string(32, 'x'),
                      6.2,
                      30.5,
                      false};
    layer.quant_scheme = "per-channel-symmetric";
    ASSERT_TRUE(registry->CompleteTier(id, "lossless", {layer}).ok());
    ASSERT_TRUE(
        registry->SetTierState(id, "q27", TierState::kEncoding, "").ok());
  }
  auto registry = Registry::Open(path).value();
  auto tiers = registry->GetTiers(id).value();
  ASSERT_EQ(tiers.size(), 2u);
  EXPECT_EQ(tiers[0].state, TierState::kReady);
  ASSERT_EQ(tiers[0].layers.size(), 1u);
  EXPECT_EQ(tiers[0].layers[0].decoded_sha256, std::string(32, 'x'));
  EXPECT_EQ(tiers[0].layers[0].quant_scheme, "per-channel-symmetric");
  EXPECT_EQ(tiers[0].layers[0].codec, LayerCodec::kZstdInt8);
  EXPECT_EQ(
      tiers[1].state,
      TierState::kNotEncoded);  // the crash-interrupted encoding starts over
  auto removed = registry->DeleteVersion(id).value();
  EXPECT_THAT(removed, testing::UnorderedElementsAre(std::string(64, 'a'),
                                                     std::string(64, 'b')));
  EXPECT_EQ(registry->GetVersion("mlp", "v1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_P(RegistryTest, AccuracyKeepsItsCosineAndWhetherItWasLabelled) {
  auto registry = Registry::Open(Location("registry_accuracy")).value();
  VersionRecord embed = Version("embed");
  embed.eval_module_sha256 = std::string(64, 'c');
  embed.eval_data_sha256 = std::string(64, 'd');
  Accuracy reference{0, 0, 50};
  reference.labelled = false;
  reference.output_cosine = 1.0;
  embed.reference_accuracy = reference;
  const int64_t id = registry->AddVersion(embed, {"lossless", "q27"}).value();
  Accuracy q27{0, 0, 50};
  q27.labelled = false;
  q27.output_cosine = 0.9871;
  ASSERT_THAT(registry->SetTierAccuracy(id, "q27", q27), IsOk());
  // A figure measured before the cosine was: labelled, no cosine.
  ASSERT_THAT(registry->SetTierAccuracy(id, "lossless", Accuracy{97.5, 99, 50}),
              IsOk());

  const VersionRecord stored = registry->GetVersion("mlp", "embed").value();
  ASSERT_TRUE(stored.reference_accuracy.has_value());
  EXPECT_FALSE(stored.reference_accuracy->labelled);
  EXPECT_EQ(stored.reference_accuracy->output_cosine, 1.0);
  const TierRecord tier = registry->GetTier(id, "q27").value();
  ASSERT_TRUE(tier.accuracy.has_value());
  EXPECT_FALSE(tier.accuracy->labelled);
  EXPECT_DOUBLE_EQ(tier.accuracy->output_cosine.value(), 0.9871);
  const std::vector<TierRecord> tiers = registry->GetTiers(id).value();
  ASSERT_EQ(tiers.size(), 2u);
  EXPECT_TRUE(tiers[0].accuracy->labelled);
  EXPECT_EQ(tiers[0].accuracy->top1, 97.5);
  EXPECT_FALSE(tiers[0].accuracy->output_cosine.has_value());
  EXPECT_DOUBLE_EQ(tiers[1].accuracy->output_cosine.value(), 0.9871);
  // A version without a bundle has no reference figures at all.
  ASSERT_TRUE(registry->AddVersion(Version("plain"), {"lossless"}).ok());
  EXPECT_FALSE(
      registry->GetVersion("mlp", "plain")->reference_accuracy.has_value());
}

// A layer's codec is stored under a frozen number (the registry's own table,
// not the API enum's), and a number no codec has is refused by name.
TEST_P(RegistryTest, StoresCodecsUnderFrozenNumbers) {
  const std::string path = Location("registry_codec");
  int64_t id = 0;
  {
    auto registry = Registry::Open(path).value();
    id = registry->AddVersion(Version("v1"), {"lossless"}).value();
    LayerRecord hevc{"a.weight", std::string(64, 'a'), 10, LayerCodec::kHevc};
    LayerRecord delta{"b.weight", std::string(64, 'b'), 10,
                      LayerCodec::kHevcDelta};
    ASSERT_THAT(registry->CompleteTier(id, "lossless", {hevc, delta}), IsOk());
  }
  {
    auto db = Database::Open(path).value();
    auto query = db->Prepare("SELECT codec FROM layers ORDER BY idx").value();
    std::vector<int64_t> stored;
    while (query.Step().value()) stored.push_back(query.Int(0));
    EXPECT_THAT(stored, testing::ElementsAre(1, 7));
    ASSERT_THAT(db->Execute("UPDATE layers SET codec = 99 WHERE idx = 1"),
                IsOk());
  }
  auto registry = Registry::Open(path).value();
  EXPECT_THAT(registry->GetTiers(id),
              StatusIs(absl::StatusCode::kDataLoss,
                       testing::HasSubstr("layer b.weight has unknown codec")));
}

// A tier's encoding lease: one holder at a time, renewed by its holder, taken
// over once expired, freed by its holder only; a tier left ENCODING under a
// live lease is not reset by another replica opening the registry.
TEST_P(RegistryTest, TierLeasesHaveOneLiveHolder) {
  const std::string path = Location("registry_leases");
  auto registry = Registry::Open(path).value();
  const int64_t id =
      registry->AddVersion(Version("v1"), {"lossless", "q27"}).value();
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "a", 1000, 2000),
              IsOkAndHolds(true));
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "b", 1500, 2500),
              IsOkAndHolds(false));
  EXPECT_THAT(registry->AcquireTierLease(id, "lossless", "b", 1500, 2500),
              IsOkAndHolds(true));
  ASSERT_THAT(registry->RenewTierLeases("a", 3000), IsOk());
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "b", 2500, 3500),
              IsOkAndHolds(false));  // renewed: still a's
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "b", 3000, 4000),
              IsOkAndHolds(true));  // expired: b takes it over
  ASSERT_THAT(registry->ReleaseTierLease(id, "q27", "a"), IsOk());  // not a's
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "a", 3100, 4100),
              IsOkAndHolds(false));
  ASSERT_THAT(registry->ReleaseTierLease(id, "q27", "b"), IsOk());
  EXPECT_THAT(registry->AcquireTierLease(id, "q27", "a", 3100, 4100),
              IsOkAndHolds(true));

  // A live lease (far in the future) keeps its tier ENCODING across an Open.
  ASSERT_THAT(
      registry->AcquireTierLease(id, "lossless", "c", 0, int64_t{1} << 60),
      IsOkAndHolds(false));
  ASSERT_THAT(registry->ReleaseTierLease(id, "lossless", "b"), IsOk());
  ASSERT_THAT(
      registry->AcquireTierLease(id, "lossless", "c", 0, int64_t{1} << 60),
      IsOkAndHolds(true));
  ASSERT_THAT(registry->SetTierState(id, "lossless", TierState::kEncoding, ""),
              IsOk());
  ASSERT_THAT(registry->SetTierState(id, "q27", TierState::kEncoding, ""),
              IsOk());
  registry.reset();
  registry = Registry::Open(path).value();
  EXPECT_EQ(registry->GetTier(id, "lossless")->state, TierState::kEncoding);
  EXPECT_EQ(registry->GetTier(id, "q27")->state, TierState::kNotEncoded);
}

TEST(Postgres, UrlsLoseTheirPasswordInNamesAndErrors) {
  EXPECT_EQ(RedactPostgresUrl("postgresql://wc:s3cret@db:5432/weightcast"),
            "postgresql://wc:***@db:5432/weightcast");
  EXPECT_EQ(RedactPostgresUrl("postgresql://db/wc?user=wc&password=s3cret&x=1"),
            "postgresql://db/wc?user=wc&password=***&x=1");
  EXPECT_EQ(RedactPostgresUrl("postgres://wc@db/weightcast"),
            "postgres://wc@db/weightcast");
  // Nothing listens on port 1: the error names the registry, not the password.
  auto registry = Registry::Open(
      "postgresql://wc:s3cret@127.0.0.1:1/weightcast?connect_timeout=2");
  ASSERT_EQ(registry.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(registry.status().message()),
              HasSubstr("registry postgresql://wc:***@127.0.0.1:1/weightcast"));
  EXPECT_THAT(std::string(registry.status().message()),
              testing::Not(HasSubstr("s3cret")));
}

TEST(BlobStore, StoresByContentAndReadsRanges) {
  auto blobs = BlobStore::Open(FreshDir("blobs")).value();
  const std::vector<uint8_t> data = {1, 2, 3, 4, 5};
  const std::string sha = blobs->Put(data).value();
  EXPECT_EQ(sha, blobs->Put(data).value());
  EXPECT_TRUE(blobs->Contains(sha));
  EXPECT_EQ(blobs->Read(sha, 1, 3).value(), (std::vector<uint8_t>{2, 3, 4}));
  EXPECT_EQ(blobs->Read(sha, 3, 100).value(), (std::vector<uint8_t>{4, 5}));
  EXPECT_EQ(blobs->Read(sha, 6, 1).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(blobs->Read(std::string(64, 'c'), 0, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(blobs->Contains("../../etc/passwd"));
}

TEST(BlobStore, OpenRemovesTemporariesLeftByACrash) {
  const std::string dir = FreshDir("blobs2");
  auto blobs = BlobStore::Open(dir).value();
  const std::string sha = blobs->Put(std::vector<uint8_t>{9}).value();
  const std::string partial = blobs->PathOf(sha) + ".tmp";
  { std::ofstream(partial) << "half"; }
  { std::ofstream(blobs->TempPath("upload")) << "half an upload"; }
  blobs = BlobStore::Open(dir).value();
  EXPECT_FALSE(std::filesystem::exists(partial));
  EXPECT_TRUE(std::filesystem::is_empty(dir + "/tmp"));
  EXPECT_TRUE(blobs->Contains(sha));
}

}  // namespace
}  // namespace weightcast
