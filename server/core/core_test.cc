#include <filesystem>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/base/file.h"
#include "common/checkpoint/safetensors.h"
#include "common/pack/layer_codec.h"
#include "common/pack/layer_policy.h"
#include "common/pack/tier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/encoder_pool.h"
#include "server/core/lru_cache.h"
#include "server/core/model_store.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// A copy of a fixture to upload (Register moves its file into the blob store).
std::string Upload(const std::string& dir, const std::string& fixture) {
  const std::string path = dir + "/upload-" + fixture;
  std::filesystem::copy_file(FixtureDir() + "/" + fixture, path,
                             std::filesystem::copy_options::overwrite_existing);
  return path;
}

ModelStoreOptions Options(const std::string& dir) {
  ModelStoreOptions options;
  options.data_dir = dir + "/data";
  options.workers = 2;
  options.default_ladder = "lossless,q27";
  options.x265_preset = "ultrafast";
  return options;
}

TEST(ModelStore, TooManyTensorsOrDimensionsAreRefusedNamingTheLimit) {
  const std::string dir = FreshDir("core_limits");
  ModelStoreOptions options = Options(dir);
  options.max_tensors = 3;  // mlp.pt holds 4
  auto store = ModelStore::Create(options).value();
  auto refused = store->Register({"mlp", "v1"}, Upload(dir, "mlp.pt"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("at most 3 (--max-tensors)"));
  options.max_tensors = 1 << 16;
  options.max_tensor_rank = 3;  // cnn_bn.pt's convolution weight has 4
  store.reset();
  store = ModelStore::Create(options).value();
  refused = store->Register({"cnn", "v1"}, Upload(dir, "cnn_bn.pt"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("conv.weight has 4 dimensions"));
  EXPECT_TRUE(store->List().value().empty());
  EXPECT_TRUE(store->Register({"mlp", "v1"}, Upload(dir, "mlp.pt")).ok());
}

TEST(LruCache, KeepsTheMostRecentlyUsedWithinItsBudget) {
  const auto value = [](int n) { return std::make_shared<const int>(n); };
  LruCache<int> cache(/*budget_bytes=*/100);
  EXPECT_EQ(cache.Get("a"), nullptr);
  cache.Put("a", value(1), 40);
  cache.Put("b", value(2), 40);
  ASSERT_NE(cache.Get("a"), nullptr);  // now the most recently used
  cache.Put("c", value(3), 40);        // over the budget: b goes
  EXPECT_EQ(cache.Get("b"), nullptr);
  EXPECT_EQ(*cache.Get("a"), 1);
  EXPECT_EQ(*cache.Get("c"), 3);
  EXPECT_EQ(cache.bytes(), 80u);
  cache.Put("c", value(4), 10);  // replaced, not added
  EXPECT_EQ(cache.bytes(), 50u);
  EXPECT_EQ(*cache.Get("c"), 4);
  cache.Put("huge", value(5), 101);  // larger than the budget: not kept
  EXPECT_EQ(cache.Get("huge"), nullptr);
  cache.Put("none", nullptr, 1);
  EXPECT_EQ(cache.Get("none"), nullptr);
  EXPECT_NE(cache.Get("a"), nullptr);
  cache.Put("v7/x", value(6), 1);
  cache.Put("v7/y", value(7), 1);
  cache.Put("v70/x", value(8), 1);
  cache.ErasePrefix("v7/");
  EXPECT_EQ(cache.Get("v7/x"), nullptr);
  EXPECT_EQ(cache.Get("v7/y"), nullptr);
  EXPECT_EQ(*cache.Get("v70/x"), 8);
  EXPECT_EQ(cache.bytes(), 51u);
}

TEST(EncoderPool, UrgentJobsRunFirstAndQueuedWorkCanBecomeUrgent) {
  std::vector<int> order;
  absl::Mutex mu;
  absl::Notification gate, gate_running;
  auto background = std::make_shared<std::atomic<bool>>(false);
  auto later = std::make_shared<std::atomic<bool>>(false);
  auto urgent = std::make_shared<std::atomic<bool>>(true);
  auto record = [&](int n) {
    return [&, n] {
      absl::MutexLock l(&mu);
      order.push_back(n);
    };
  };
  {
    EncoderPool pool(1);
    pool.Submit(background, [&] {
      gate_running.Notify();
      gate.WaitForNotification();
    });  // occupies the one worker
    // Until the worker holds that job, it would take the urgent job 1 first.
    gate_running.WaitForNotification();
    pool.Submit(background, record(4));
    pool.Submit(later, record(2));
    pool.Submit(urgent, record(1));
    pool.Submit(later, record(3));
    later->store(true);  // a pull now waits for the "later" group: it overtakes
                         // the background job
    gate.Notify();
    while (pool.queued() > 0 || pool.busy() > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Urgent jobs in submission order (2 was queued before 1), then the
  // background job.
  EXPECT_EQ(order, (std::vector<int>{2, 1, 3, 4}));
}

TEST(ModelStore, TilesSpreadOverTheWorkersCodeTheBytesOfOneThread) {
  // A 4 x 1-tile layer (a safetensors file, read on demand) with the default
  // policy, coded by the store's two workers, against EncodeLayer on one
  // thread.
  const std::string dir = FreshDir("core_tiles");
  Model model;
  std::vector<float> values(16384 * 32);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = 0.01f * static_cast<float>((i * 7919) % 255) - 1.27f;
  model.tensors.push_back(
      MakeFloat32Tensor("embed.weight", {16384, 32}, values));
  ASSERT_TRUE(WriteSafetensorsFile(model, dir + "/upload.safetensors").ok());
  auto store = ModelStore::Create(Options(dir)).value();
  ASSERT_TRUE(store->Register({"big", "v1"}, dir + "/upload.safetensors").ok());
  auto manifest = store->GetManifest("big", "v1", "q27");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  const LayerPolicy policy = ParseLayerPolicy("").value();
  LayerEncodeOptions one_thread;
  one_thread.hevc.preset = "ultrafast";
  one_thread.threads = 1;
  const LayerEncodeOptions options = OptionsFor(
      model.tensors[0], policy, ParseTier("q27").value(), one_thread);
  auto expected = EncodeLayer(model.tensors[0], options);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(expected->tiles.size(), 4u);
  EXPECT_EQ(
      ReadFileBytes(store->blobs().PathOf(manifest->layers[0].blob_sha256))
          .value(),
      SerializePackedLayer(*expected));
}

TEST(ModelStore, ConcurrentManifestsEncodeEachLayerOnce) {
  const std::string dir = FreshDir("store1");
  auto store = ModelStore::Create(Options(dir)).value();
  auto version =
      store->Register({"cnn", "v1", "", "", ""}, Upload(dir, "cnn_bn.pt"));
  ASSERT_TRUE(version.ok()) << version.status();
  std::vector<std::thread> pullers;
  std::vector<absl::StatusOr<Manifest>> results(10);
  for (int i = 0; i < 10; ++i) {
    pullers.emplace_back(
        [&, i] { results[i] = store->GetManifest("cnn", "latest", "q27"); });
  }
  for (std::thread& t : pullers) t.join();
  for (const auto& manifest : results) {
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_EQ(manifest->layers.size(), version->tensors.size());
    EXPECT_EQ(manifest->layers[7].blob_sha256,
              results[0]->layers[7].blob_sha256);
  }
  EXPECT_EQ(store->layers_encoded(),
            static_cast<int64_t>(version->tensors.size()));
  for (const LayerRecord& layer : results[0]->layers)
    EXPECT_TRUE(store->blobs().Contains(layer.blob_sha256));
}

TEST(ModelStore, BadCheckpointsAndDuplicatesAreRefusedAndLoseNothing) {
  const std::string dir = FreshDir("store2");
  auto store = ModelStore::Create(Options(dir)).value();
  ASSERT_TRUE(
      store->Register({"mlp", "v1", "", "", ""}, Upload(dir, "mlp.pt")).ok());
  auto nan = store->Register({"mlp", "v2", "", "", ""}, Upload(dir, "nan.pt"));
  EXPECT_EQ(nan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(nan.status().message()), HasSubstr("fc1.weight"));
  EXPECT_EQ(store->Register({"mlp", "v1", "", "", ""}, Upload(dir, "mlp.pt"))
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(
      store->Register({"mlp", "latest", "", "", ""}, Upload(dir, "mlp.pt"))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Register({"mlp", "v3", "", "q99", ""}, Upload(dir, "mlp.pt"))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto models = store->List().value();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_THAT(models[0].second, testing::ElementsAre("v1"));
  EXPECT_TRUE(store->GetManifest("mlp", "v1", "lossless").ok());
  EXPECT_EQ(store->GetManifest("mlp", "v1", "q30").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ModelStore, EverythingSurvivesARestart) {
  const std::string dir = FreshDir("store3");
  Manifest before;
  {
    auto store = ModelStore::Create(Options(dir)).value();
    ASSERT_TRUE(
        store->Register({"mlp", "v1", "first", "", ""}, Upload(dir, "mlp.pt"))
            .ok());
    before = store->GetManifest("mlp", "v1", "q27").value();
  }
  auto store = ModelStore::Create(Options(dir)).value();
  auto after = store->GetManifest("mlp", "v1", "q27");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(store->layers_encoded(),
            0);  // served from the blobs, not re-encoded
  ASSERT_EQ(after->layers.size(), before.layers.size());
  for (size_t i = 0; i < before.layers.size(); ++i)
    EXPECT_EQ(after->layers[i].blob_sha256, before.layers[i].blob_sha256);
  EXPECT_EQ(store->Describe("mlp", "v1")->first.description, "first");
  ASSERT_TRUE(store->Delete("mlp", "v1").ok());
  for (const LayerRecord& layer : before.layers)
    EXPECT_FALSE(store->blobs().Contains(layer.blob_sha256));
}

}  // namespace
}  // namespace weightcast
