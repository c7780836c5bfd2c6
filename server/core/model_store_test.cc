// ModelStore's cache, budget tiers, deltas and manifests, with a fake layer
// encoder and a manual clock: a real registry and blob store in a fresh
// directory, no x265, no PyTorch fixtures.
#include "server/core/model_store.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/checkpoint/safetensors.h"
#include "common/pack/packed_layer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/fake_layer_encoder.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/manual_clock.h"
#include "tests/testing/status_matchers.h"

namespace weightcast {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Two linear layers: 64x64 weights (pictures under the default policy) and
// float biases. `seed` changes every value (a fine-tuned version of the same
// architecture).
std::string WriteMlp(const std::string& dir, const std::string& name,
                     float seed) {
  Model model;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"fc1.weight", {64, 64}},
      {"fc1.bias", {64}},
      {"fc2.weight", {64, 64}},
      {"fc2.bias", {64}}};
  for (const auto& [tensor_name, shape] : shapes) {
    Tensor t{tensor_name, shape, DType::kFloat32, {}};
    std::vector<float> values(static_cast<size_t>(t.NumElements()));
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = std::sin(0.01f * static_cast<float>(i) + seed);
    t.data.resize(values.size() * sizeof(float));
    std::memcpy(t.data.data(), values.data(), t.data.size());
    model.tensors.push_back(std::move(t));
  }
  const std::string path = dir + "/" + name + ".safetensors";
  EXPECT_THAT(WriteSafetensorsFile(model, path), IsOk());
  return path;
}

ModelStoreOptions Options(const std::string& dir, const LayerEncoder* encoder,
                          const Clock* clock, uint64_t cache_bytes = 0) {
  ModelStoreOptions options;
  options.data_dir = dir + "/data";
  options.workers = 2;
  options.layer_encoder = encoder;
  options.clock = clock;
  options.cache_bytes = cache_bytes;
  return options;
}

RegisterRequest Request(const std::string& version, const std::string& ladder,
                        const std::string& base_version = "") {
  RegisterRequest request;
  request.model = "mlp";
  request.version = version;
  request.ladder = ladder;
  request.base_version = base_version;
  return request;
}

const char* StateName(TierState state) {
  switch (state) {
    case TierState::kNotEncoded:
      return "NOT_ENCODED";
    case TierState::kEncoding:
      return "ENCODING";
    case TierState::kReady:
      return "READY";
    case TierState::kFailed:
      return "FAILED";
  }
  return "?";
}

std::map<std::string, std::string> States(ModelStore& store,
                                          const std::string& version) {
  std::map<std::string, std::string> states;
  auto described = store.Describe("mlp", version);
  EXPECT_THAT(described, IsOk());
  if (described.ok()) {
    for (const TierRecord& tier : described->second)
      states[tier.tier] = StateName(tier.state);
  }
  return states;
}

// The bytes of each tier of WriteMlp(seed 0) under the fake encoder, from a
// scratch store.
std::map<std::string, uint64_t> TierBytes(const std::string& ladder) {
  const std::string dir = FreshDir("model_store_tier_bytes");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  EXPECT_THAT(store->Register(Request("v1", ladder), WriteMlp(dir, "v1", 0)),
              IsOk());
  std::map<std::string, uint64_t> bytes;
  for (const auto& [tier, state] : States(*store, "v1"))
    bytes[tier] = store->GetManifest("mlp", "v1", tier)->total_bytes;
  return bytes;
}

// (name, is_base, codec, tensor_index) of each manifest entry, in order.
using Entry = std::tuple<std::string, bool, LayerCodec, uint32_t>;
std::vector<Entry> Entries(const Manifest& manifest) {
  std::vector<Entry> entries;
  for (const LayerRecord& layer : manifest.layers) {
    entries.emplace_back(layer.name, layer.is_base, layer.codec,
                         layer.tensor_index);
  }
  return entries;
}
constexpr LayerCodec kHevc = LayerCodec::kHevc;
constexpr LayerCodec kDelta = LayerCodec::kHevcDelta;
constexpr LayerCodec kFloat = LayerCodec::kFloat32;

TEST(ModelStoreCache, EvictsTheLeastRecentlyUsedTierWhenOverTheBudget) {
  const std::map<std::string, uint64_t> bytes = TierBytes("q22,q27,q32,q37");
  ASSERT_GT(bytes.at("q32"), bytes.at("q37"));
  // Room for q22, q27 and q32, or for q22, q27 and q37 (smaller), not for all
  // four.
  const uint64_t budget = bytes.at("q22") + bytes.at("q27") + bytes.at("q32");
  const std::string dir = FreshDir("model_store_lru");
  FakeLayerEncoder encoder;
  ManualClock clock;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &clock, budget)).value();
  ASSERT_THAT(
      store->Register(Request("v1", "q22,q27,q32,q37"), WriteMlp(dir, "v1", 0)),
      IsOk());
  for (const std::string tier :
       {"q22", "q27", "q32", "q27"}) {  // q27 used again after q32
    clock.Advance(absl::Seconds(10));
    ASSERT_THAT(store->GetManifest("mlp", "v1", tier), IsOk()) << tier;
  }
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{{"q22", "READY"},
                                                  {"q27", "READY"},
                                                  {"q32", "READY"},
                                                  {"q37", "NOT_ENCODED"}}));

  clock.Advance(absl::Seconds(10));
  ASSERT_THAT(store->GetManifest("mlp", "v1", "q37"), IsOk());
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{{"q22", "READY"},
                                                  {"q27", "READY"},
                                                  {"q32", "NOT_ENCODED"},
                                                  {"q37", "READY"}}));
  EXPECT_EQ(store->EncodedBytes().value(),
            bytes.at("q22") + bytes.at("q27") + bytes.at("q37"));
  EXPECT_LE(store->EncodedBytes().value(), budget);
}

TEST(ModelStoreCache, ATierUsedLessThanTheMinimumIdleTimeAgoIsNotEvicted) {
  // What keeps replicas on one registry from evicting a tier another replica
  // is sending: its last use (the registry's) is recent.
  const std::string dir = FreshDir("model_store_min_idle");
  FakeLayerEncoder encoder;
  ManualClock clock;
  ModelStoreOptions options = Options(dir, &encoder, &clock, /*cache_bytes=*/1);
  options.evict_min_idle = absl::Seconds(600);
  auto store = ModelStore::Create(options).value();
  ASSERT_THAT(
      store->Register(Request("v1", "q22,q27,q32"), WriteMlp(dir, "v1", 0)),
      IsOk());
  for (const std::string tier : {"q22", "q27", "q32"}) {
    clock.Advance(absl::Seconds(100));
    ASSERT_THAT(store->GetManifest("mlp", "v1", tier), IsOk()) << tier;
  }
  // Over the 1-byte budget, but q27 was used 100 s ago and q32 just now.
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{
                  {"q22", "READY"}, {"q27", "READY"}, {"q32", "READY"}}));
  // 601 s after q27's use, the next encoding evicts it; q32 (used 100 s later)
  // stays until its own time is up.
  clock.Advance(absl::Seconds(501));
  ASSERT_THAT(store->Register(Request("v2", "q22,q27"), WriteMlp(dir, "v2", 1)),
              IsOk());
  ASSERT_THAT(store->GetManifest("mlp", "v2", "q27"), IsOk());
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{
                  {"q22", "READY"}, {"q27", "NOT_ENCODED"}, {"q32", "READY"}}));
}

TEST(ModelStoreCache,
     EachVersionsFirstLadderTierIsPinnedAndAnEvictedTierIsEncodedAgain) {
  const std::string dir = FreshDir("model_store_pinned");
  FakeLayerEncoder encoder;
  ManualClock clock;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &clock, /*cache_bytes=*/1))
          .value();
  ASSERT_THAT(store->Register(Request("v1", "q22,q27"), WriteMlp(dir, "v1", 0)),
              IsOk());
  ASSERT_THAT(store->Register(Request("v2", "q22,q27"), WriteMlp(dir, "v2", 1)),
              IsOk());
  std::vector<LayerRecord> v1_q27;
  for (const auto& [version, tier] :
       std::vector<std::pair<std::string, std::string>>{
           {"v1", "q22"}, {"v1", "q27"}, {"v2", "q22"}, {"v2", "q27"}}) {
    clock.Advance(absl::Seconds(1));
    auto manifest =
        store->GetManifest("mlp", version, tier);  // its lease ends here
    ASSERT_THAT(manifest, IsOk());
    if (version == "v1" && tier == "q27") v1_q27 = manifest->layers;
  }
  // Every tier is over a 1-byte budget: the first ladder tiers stay, and the
  // tier just encoded.
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{{"q22", "READY"},
                                                  {"q27", "NOT_ENCODED"}}));
  EXPECT_THAT(States(*store, "v2"), (std::map<std::string, std::string>{
                                        {"q22", "READY"}, {"q27", "READY"}}));
  // Its own picture blobs are gone; the float biases, the same bytes in q22,
  // are not.
  for (const LayerRecord& layer : v1_q27) {
    EXPECT_EQ(store->blobs().Contains(layer.blob_sha256), !layer.picture)
        << layer.name;
  }

  const int64_t before = encoder.encodes();
  clock.Advance(absl::Seconds(1));
  auto again = store->GetManifest("mlp", "v1", "q27");
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(encoder.encodes() - before, 4);
  for (size_t i = 0; i < again->layers.size(); ++i)
    EXPECT_EQ(again->layers[i].blob_sha256, v1_q27[i].blob_sha256);
  EXPECT_THAT(States(*store, "v2"),
              (std::map<std::string, std::string>{{"q22", "READY"},
                                                  {"q27", "NOT_ENCODED"}}));
}

TEST(ModelStoreCache, ATierBeingStreamedIsNotEvictedUntilItsLeaseIsReleased) {
  const std::string dir = FreshDir("model_store_lease");
  FakeLayerEncoder encoder;
  ManualClock clock;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &clock, /*cache_bytes=*/1))
          .value();
  ASSERT_THAT(
      store->Register(Request("v1", "q22,q27,q32,q37"), WriteMlp(dir, "v1", 0)),
      IsOk());
  ASSERT_THAT(store->GetManifest("mlp", "v1", "q22"), IsOk());
  clock.Advance(absl::Seconds(1));
  absl::StatusOr<Manifest> streaming = store->GetManifest("mlp", "v1", "q27");
  ASSERT_THAT(streaming, IsOk());
  clock.Advance(absl::Seconds(1));
  ASSERT_THAT(store->GetManifest("mlp", "v1", "q32"), IsOk());
  EXPECT_EQ(States(*store, "v1").at("q27"),
            "READY");  // the least recently used, but leased

  streaming->lease.reset();  // the stream ended
  clock.Advance(absl::Seconds(1));
  ASSERT_THAT(store->GetManifest("mlp", "v1", "q37"), IsOk());
  EXPECT_THAT(States(*store, "v1"),
              (std::map<std::string, std::string>{{"q22", "READY"},
                                                  {"q27", "NOT_ENCODED"},
                                                  {"q32", "NOT_ENCODED"},
                                                  {"q37", "READY"}}));
}

TEST(ModelStoreCache, ARestartWithASmallerBudgetEvictsDownToIt) {
  const std::string dir = FreshDir("model_store_restart");
  FakeLayerEncoder encoder;
  ManualClock clock;
  {
    auto store = ModelStore::Create(Options(dir, &encoder, &clock)).value();
    ASSERT_THAT(
        store->Register(Request("v1", "q22,q27,q32"), WriteMlp(dir, "v1", 0)),
        IsOk());
    for (const std::string tier : {"q32", "q27", "q22"}) {
      clock.Advance(absl::Seconds(1));
      ASSERT_THAT(store->GetManifest("mlp", "v1", tier), IsOk());
    }
  }
  auto store =
      ModelStore::Create(Options(dir, &encoder, &clock, /*cache_bytes=*/1))
          .value();
  EXPECT_THAT(
      States(*store, "v1"),
      (std::map<std::string, std::string>{
          {"q22", "READY"}, {"q27", "NOT_ENCODED"}, {"q32", "NOT_ENCODED"}}));
}

TEST(ModelStoreCache, LastUseAndRegistrationAreStampedByTheClock) {
  const std::string dir = FreshDir("model_store_clock");
  FakeLayerEncoder encoder;
  ManualClock clock(absl::FromUnixSeconds(1'700'000'000));
  auto store = ModelStore::Create(Options(dir, &encoder, &clock)).value();
  auto registered =
      store->Register(Request("v1", "q22"), WriteMlp(dir, "v1", 0));
  ASSERT_THAT(registered, IsOk());
  EXPECT_EQ(registered->created_unix_seconds, 1'700'000'000);
  EXPECT_EQ(store->Describe("mlp", "v1")->first.created_unix_seconds,
            1'700'000'000);
}

TEST(ModelStoreEncoding, ConcurrentManifestsOfOneTierEncodeEachLayerOnce) {
  const std::string dir = FreshDir("model_store_once");
  absl::Notification gate;
  FakeLayerEncoder::Options fake;
  fake.gate = &gate;
  FakeLayerEncoder encoder(fake);
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(store->Register(Request("v1", "q22,q27"), WriteMlp(dir, "v1", 0)),
              IsOk());
  std::vector<absl::StatusOr<Manifest>> results(10);
  std::vector<std::thread> pullers;
  for (int i = 0; i < 10; ++i)
    pullers.emplace_back(
        [&, i] { results[i] = store->GetManifest("mlp", "v1", "q27"); });
  // Hold the layer jobs until every puller has asked: they all wait on the one
  // encoding.
  while (States(*store, "v1").at("q27") != "ENCODING")
    std::this_thread::yield();
  gate.Notify();
  for (std::thread& t : pullers) t.join();
  for (const auto& manifest : results) {
    ASSERT_THAT(manifest, IsOk());
    ASSERT_EQ(manifest->layers.size(), 4u);
    for (size_t i = 0; i < 4; ++i)
      EXPECT_EQ(manifest->layers[i].blob_sha256,
                results[0]->layers[i].blob_sha256);
  }
  EXPECT_EQ(encoder.encodes(), 4);
  EXPECT_EQ(store->layers_encoded(), 4);
}

TEST(ModelStoreEncoding, ABudgetTierFitsItsBytesWithAQpPerPictureLayer) {
  const std::string dir = FreshDir("model_store_budget");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(
      store->Register(Request("v1", "q22,budget-5k"), WriteMlp(dir, "v1", 0)),
      IsOk());
  auto manifest = store->GetManifest("mlp", "v1", "budget-5k");
  ASSERT_THAT(manifest, IsOk());
  EXPECT_LE(manifest->total_bytes, 5000u);
  // Measured: each picture layer at every QP of the grid, each other layer
  // once; then encoded.
  EXPECT_EQ(encoder.encodes(),
            static_cast<int64_t>(2 * BudgetQpGrid().size() + 2 + 4));
  for (const LayerRecord& layer : manifest->layers) {
    if (!layer.picture) continue;
    EXPECT_THAT(BudgetQpGrid(), testing::Contains(layer.qp)) << layer.name;
    EXPECT_LT(layer.qp, 51)
        << layer.name << ": 5000 bytes buy more than the coarsest QP";
  }
  // The ladder's q22 would not fit: the budget is what made the picture layers
  // coarser.
  EXPECT_GT(store->GetManifest("mlp", "v1", "q22")->total_bytes, 5000u);
}

TEST(ModelStoreEncoding, AccuracyTiersNeedAnEvaluationBundle) {
  const std::string dir = FreshDir("model_store_acc_no_bundle");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  // Not in a version's ladder without a bundle, nor in the default ladder.
  EXPECT_THAT(
      store->Register(Request("v0", "q22,acc-1"), WriteMlp(dir, "v0", 0)),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("evaluation bundle")));
  EXPECT_THAT(store->SetDefaultLadder("lossless,acc-0.5"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("evaluation bundle")));
  ModelStoreOptions options = Options(dir + "/b", &encoder, &SystemClock());
  options.default_ladder = "acc-1";
  EXPECT_THAT(ModelStore::Create(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Nor on request; another spelling is named; nothing is added or encoded.
  ASSERT_THAT(store->Register(Request("v1", "q22"), WriteMlp(dir, "v1", 0)),
              IsOk());
  EXPECT_THAT(store->GetManifest("mlp", "v1", "acc-0.5").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("mlp/v1 was registered without one")));
  EXPECT_THAT(store->Warm("mlp", "v1", {"acc-2"}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(
      store->GetManifest("mlp", "v1", "cos-0.99").status(),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               HasSubstr("a mean cosine of at least 0.99 with the float "
                         "model's: it needs an evaluation bundle")));
  EXPECT_THAT(store->GetManifest("mlp", "v1", "cos-0.990").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spelled 'cos-0.99'")));
  EXPECT_THAT(store->GetManifest("mlp", "v1", "acc-0.50").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spelled 'acc-0.5'")));
  EXPECT_THAT(States(*store, "v1"),
              testing::ElementsAre(testing::Pair("q22", "NOT_ENCODED")));
  EXPECT_EQ(encoder.encodes(), 0);
}

TEST(ModelStoreEncoding, TheBudgetTiersOfAVersionMeasureItOnce) {
  const std::string dir = FreshDir("model_store_budget_curves");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(store->Register(Request("v1", "budget-5k,budget-4k"),
                              WriteMlp(dir, "v1", 0)),
              IsOk());
  ASSERT_THAT(store->GetManifest("mlp", "v1", "budget-5k"), IsOk());
  const int64_t measured = encoder.encodes();
  auto smaller = store->GetManifest("mlp", "v1", "budget-4k");
  ASSERT_THAT(smaller, IsOk());
  EXPECT_EQ(encoder.encodes() - measured,
            4);  // the four layers at their QPs, no measuring
  EXPECT_LE(smaller->total_bytes, 4000u);
}

TEST(ModelStoreEncoding,
     ABudgetBelowTheSmallestCodingFailsTheTierSayingWhatItNeeds) {
  const std::string dir = FreshDir("model_store_budget_small");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(
      store->Register(Request("v1", "q22,budget-1k"), WriteMlp(dir, "v1", 0)),
      IsOk());
  EXPECT_THAT(store->GetManifest("mlp", "v1", "budget-1k"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a budget of 1000 bytes is below the")));
  EXPECT_EQ(States(*store, "v1").at("budget-1k"), "FAILED");
  EXPECT_EQ(store->layers_encoded(), 0);
}

TEST(ModelStoreManifest, EachDeltaLayerFollowsItsBaseUnlessTheClientHoldsIt) {
  const std::string dir = FreshDir("model_store_delta");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(store->Register(Request("v1", "q27"), WriteMlp(dir, "v1", 0)),
              IsOk());
  ASSERT_THAT(
      store->Register(Request("v2", "q27", "v1"), WriteMlp(dir, "v2", 0.5f)),
      IsOk());
  // v2's tier waits for v1's (a continuation), then codes its picture layers on
  // them.
  auto v2 = store->GetManifest("mlp", "v2", "q27");
  ASSERT_THAT(v2, IsOk());
  auto v1 = store->GetManifest("mlp", "v1", "q27");
  ASSERT_THAT(v1, IsOk());
  EXPECT_THAT(Entries(*v2), ElementsAre(Entry{"fc1.weight", true, kHevc, 0},
                                        Entry{"fc1.weight", false, kDelta, 0},
                                        Entry{"fc1.bias", false, kFloat, 1},
                                        Entry{"fc2.weight", true, kHevc, 2},
                                        Entry{"fc2.weight", false, kDelta, 2},
                                        Entry{"fc2.bias", false, kFloat, 3}));
  EXPECT_EQ(v2->layers[0].blob_sha256, v1->layers[0].blob_sha256);
  EXPECT_EQ(v2->layers[1].base_blob_sha256, v1->layers[0].blob_sha256);
  EXPECT_EQ(v2->layers[4].base_blob_sha256, v1->layers[2].blob_sha256);
  uint64_t sum = 0;
  for (const LayerRecord& layer : v2->layers) sum += layer.bytes;
  EXPECT_EQ(v2->total_bytes, sum);

  // A client holding v1's q27 layers gets the deltas alone.
  auto held = store->GetManifest(
      "mlp", "v2", "q27",
      {v1->layers[0].blob_sha256, v1->layers[2].blob_sha256});
  ASSERT_THAT(held, IsOk());
  EXPECT_THAT(Entries(*held), ElementsAre(Entry{"fc1.weight", false, kDelta, 0},
                                          Entry{"fc1.bias", false, kFloat, 1},
                                          Entry{"fc2.weight", false, kDelta, 2},
                                          Entry{"fc2.bias", false, kFloat, 3}));
  EXPECT_EQ(held->total_bytes,
            v2->total_bytes - v1->layers[0].bytes - v1->layers[2].bytes);
}

TEST(ModelStoreManifest, ALayerWhoseDeltaIsNotSmallerIsCodedOnItsOwn) {
  const std::string dir = FreshDir("model_store_no_delta");
  FakeLayerEncoder::Options fake;
  fake.deltas = false;
  FakeLayerEncoder encoder(fake);
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(store->Register(Request("v1", "q27"), WriteMlp(dir, "v1", 0)),
              IsOk());
  ASSERT_THAT(
      store->Register(Request("v2", "q27", "v1"), WriteMlp(dir, "v2", 0.5f)),
      IsOk());
  auto v2 = store->GetManifest("mlp", "v2", "q27");
  ASSERT_THAT(v2, IsOk());
  EXPECT_EQ(encoder.deltas_tried(), 2);
  EXPECT_THAT(Entries(*v2), ElementsAre(Entry{"fc1.weight", false, kHevc, 0},
                                        Entry{"fc1.bias", false, kFloat, 1},
                                        Entry{"fc2.weight", false, kHevc, 2},
                                        Entry{"fc2.bias", false, kFloat, 3}));
  for (const LayerRecord& layer : v2->layers)
    EXPECT_EQ(layer.base_blob_sha256, "") << layer.name;
}

TEST(ModelStoreManifest,
     ARefinementSendsTheCoarseModelFirstAndItsPPicturesLast) {
  const std::string dir = FreshDir("model_store_refinement");
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  ASSERT_THAT(store->Register(Request("v1", "q37"), WriteMlp(dir, "v1", 0)),
              IsOk());
  auto refined = store->GetManifest("mlp", "v1", "q37+q22");
  ASSERT_THAT(refined, IsOk());
  auto coarse = store->GetManifest("mlp", "v1", "q37");
  ASSERT_THAT(coarse, IsOk());
  // The coarse picture layers (base entries), the layers coded on their own,
  // the P pictures.
  EXPECT_THAT(Entries(*refined),
              ElementsAre(Entry{"fc1.weight", true, kHevc, 0},
                          Entry{"fc2.weight", true, kHevc, 2},
                          Entry{"fc1.bias", false, kFloat, 1},
                          Entry{"fc2.bias", false, kFloat, 3},
                          Entry{"fc1.weight", false, kDelta, 0},
                          Entry{"fc2.weight", false, kDelta, 2}));
  EXPECT_EQ(refined->layers[0].blob_sha256, coarse->layers[0].blob_sha256);
  EXPECT_EQ(refined->layers[4].base_blob_sha256, coarse->layers[0].blob_sha256);
  EXPECT_EQ(refined->layers[4].qp, 22);
  // A device may not add a refinement to a tier the ladder does not offer.
  EXPECT_THAT(
      store->GetManifest("mlp", "v1", "q37+q27", {}, TierAccess::kLadder),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("is not offered")));
}

}  // namespace
}  // namespace weightcast

namespace weightcast {
namespace {

// Codes with the fake, except that a picture layer's encode waits (up to 60 s)
// for LayerEncodeOptions::cancelled, as the real coding asks before each tile.
class WaitsForCancel final : public LayerEncoder {
 public:
  absl::StatusOr<PackedLayer> Encode(
      const Tensor& tensor, const LayerEncodeOptions& options) const override {
    if (options.codec != LayerCodec::kHevc)
      return fake_.Encode(tensor, options);
    // Several picture layers may enter at once (one per encode worker).
    if (!entering_.exchange(true)) entered_.Notify();
    // Bounded: 60 s at most.
    for (int i = 0; i < 60000; ++i) {
      if (options.cancelled && options.cancelled())
        return absl::CancelledError("cancelled");
      absl::SleepFor(absl::Milliseconds(1));
    }
    return absl::DeadlineExceededError("never cancelled");
  }
  absl::StatusOr<std::optional<PackedLayer>> EncodeDelta(
      const PackedLayer& base, const Tensor& base_source, const Tensor& target,
      double intra_sqnr_db, uint64_t max_bytes,
      int first_offset) const override {
    return fake_.EncodeDelta(base, base_source, target, intra_sqnr_db,
                             max_bytes, first_offset);
  }
  absl::Notification& entered() const { return entered_; }

 private:
  FakeLayerEncoder fake_;
  mutable std::atomic<bool> entering_{false};
  mutable absl::Notification entered_;
};

TEST(ModelStoreEncoding, ShutdownCancelsARunningEncodeAndARestartEncodesIt) {
  const std::string dir = FreshDir("model_store_cancel");
  const std::string path = WriteMlp(dir, "v1", 0);
  {
    WaitsForCancel encoder;
    auto store =
        ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
    ASSERT_THAT(store->Register(Request("v1", "q27"), path), IsOk());
    absl::StatusOr<Manifest> pulled;
    std::thread puller(
        [&] { pulled = store->GetManifest("mlp", "v1", "q27"); });
    encoder.entered().WaitForNotification();
    const absl::Time start = absl::Now();
    store->Shutdown();
    EXPECT_LT(absl::Now() - start, absl::Seconds(30));
    puller.join();
    EXPECT_EQ(pulled.status().code(), absl::StatusCode::kUnavailable);
  }
  FakeLayerEncoder encoder;
  auto store =
      ModelStore::Create(Options(dir, &encoder, &SystemClock())).value();
  EXPECT_EQ(States(*store, "v1").at("q27"), "NOT_ENCODED");
  auto manifest = store->GetManifest("mlp", "v1", "q27");
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->layers.size(), 4u);
  EXPECT_EQ(States(*store, "v1").at("q27"), "READY");
}

}  // namespace
}  // namespace weightcast
