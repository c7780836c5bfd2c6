// End to end against the real weightcastd on 127.0.0.1: register real PyTorch
// checkpoints, list, describe, pull every tier, resume, restart, and the status
// codes a client relies on.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reflection.h"
#include "tests/testing/reliability_log.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

const std::string kServer = BuildDir() + "/server/weightcastd";

struct RawClient {  // the generated stubs, for status codes and raw messages
  explicit RawClient(const std::string& address)
      : channel(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        admin(v1::Admin::NewStub(channel)),
        distribution(v1::Distribution::NewStub(channel)) {}

  grpc::Status Register(const std::string& model, const std::string& version,
                        const std::string& fixture,
                        v1::RegisterModelResponse* response,
                        const std::string& ladder = "lossless,q22,q32") {
    grpc::ClientContext context;
    auto writer = admin->RegisterModel(&context, response);
    v1::RegisterModelRequest request;
    v1::RegisterHeader* header = request.mutable_header();
    header->set_model(model);
    header->set_version(version);
    header->set_tier_ladder(ladder);
    const std::vector<uint8_t> bytes =
        ReadFileBytes(FixtureDir() + "/" + fixture).value();
    header->set_total_bytes(bytes.size());
    writer->Write(request);
    for (size_t offset = 0; offset < bytes.size(); offset += 100000) {
      request.Clear();
      request.set_chunk(bytes.data() + offset,
                        std::min<size_t>(100000, bytes.size() - offset));
      if (!writer->Write(request)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Pulls a tier; returns the manifest and each layer's bytes as received.
  grpc::Status Pull(const std::string& model, const std::string& version,
                    const std::string& tier, v1::Manifest* manifest,
                    std::vector<std::string>* layers, uint32_t resume_layer = 0,
                    uint64_t resume_offset = 0) {
    grpc::ClientContext context;
    v1::PullRequest request;
    request.set_model(model);
    request.set_version(version);
    request.mutable_tier()->set_name(tier);
    request.set_resume_layer(resume_layer);
    request.set_resume_offset(resume_offset);
    auto reader = distribution->Pull(&context, request);
    v1::PullResponse response;
    while (reader->Read(&response)) {
      if (response.has_manifest()) {
        *manifest = response.manifest();
        layers->assign(manifest->layers_size(), "");
      } else {
        const auto& chunk = response.chunk();
        std::string& layer = (*layers)[chunk.layer()];
        EXPECT_EQ(
            chunk.offset(),
            layer.size() + (chunk.layer() == resume_layer ? resume_offset : 0));
        layer += chunk.data();
      }
    }
    return reader->Finish();
  }

  // Warms model/version's ladder; whether every tier is READY within
  // `seconds` (polled).
  bool WarmUntilReady(const std::string& model, const std::string& version,
                      int seconds) {
    v1::WarmTiersRequest warm;
    warm.set_model(model);
    warm.set_version(version);
    v1::WarmTiersResponse warmed;
    grpc::ClientContext warm_context;
    if (!admin->WarmTiers(&warm_context, warm, &warmed).ok()) return false;
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    for (int polls = 0; polls < seconds * 10; ++polls) {
      v1::DescribeModelRequest request;
      request.set_model(model);
      request.set_version(version);
      v1::ModelVersion described;
      grpc::ClientContext context;
      if (admin->DescribeModel(&context, request, &described).ok() &&
          std::all_of(described.tiers().begin(), described.tiers().end(),
                      [](const v1::TierInfo& tier) {
                        return tier.state() == v1::TierInfo::READY;
                      })) {
        return true;
      }
      if (std::chrono::steady_clock::now() > give_up) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Admin::Stub> admin;
  std::unique_ptr<v1::Distribution::Stub> distribution;
};

// Lists services through server reflection (grpc.reflection.v1alpha, what
// grpcurl uses): one ServerReflectionRequest{list_services: ""} on the bidi
// stream; returns the raw response bytes. Every layer's bytes match the
// manifest (size and SHA-256) and decode to the recorded digest.
void ExpectLayersVerify(const v1::Manifest& manifest,
                        const std::vector<std::string>& layers) {
  ASSERT_EQ(layers.size(), static_cast<size_t>(manifest.layers_size()));
  uint64_t total = 0;
  for (int i = 0; i < manifest.layers_size(); ++i) {
    const auto bytes = absl::MakeConstSpan(
        reinterpret_cast<const uint8_t*>(layers[i].data()), layers[i].size());
    EXPECT_EQ(layers[i].size(), manifest.layers(i).bytes())
        << manifest.layers(i).name();
    const Sha256Digest digest = Sha256(bytes);
    EXPECT_EQ(std::string(digest.begin(), digest.end()),
              manifest.layers(i).blob_sha256());
    size_t consumed = 0;
    auto layer = ParsePackedLayer(bytes, &consumed);
    ASSERT_TRUE(layer.ok()) << layer.status();
    EXPECT_TRUE(DecodeLayer(*layer).ok()) << manifest.layers(i).name();
    total += layers[i].size();
  }
  EXPECT_EQ(total, manifest.total_bytes());
}

TEST(ServerEndToEnd, RegisterListDescribePullRestart) {
  const std::string dir = FreshDir("server_e2e");
  auto server = ServerProcess::Start(
      kServer, dir + "/data", {"--workers", "2", "--preset", "ultrafast"});
  ASSERT_TRUE(server.ok()) << server.status();
  std::map<std::string, std::vector<std::string>> first_pull;
  {
    RawClient client(server->address());
    v1::RegisterModelResponse registered;
    grpc::Status status =
        client.Register("cnn", "v1", "cnn_bn.pt", &registered);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(registered.version().tensors_size(), 11);
    EXPECT_EQ(registered.version().tiers_size(), 3);

    v1::ListModelsResponse list;
    grpc::ClientContext list_context;
    ASSERT_TRUE(client.admin->ListModels(&list_context, {}, &list).ok());
    ASSERT_EQ(list.models_size(), 1);
    EXPECT_EQ(list.models(0).name(), "cnn");

    for (const char* tier : {"lossless", "q22", "q32"}) {
      v1::Manifest manifest;
      std::vector<std::string> layers;
      status = client.Pull("cnn", "latest", tier, &manifest, &layers);
      ASSERT_TRUE(status.ok()) << tier << ": " << status.error_message();
      EXPECT_EQ(manifest.version(), "v1");
      ExpectLayersVerify(manifest, layers);
      first_pull[tier] = layers;
    }
    v1::DescribeModelRequest describe;
    describe.set_model("cnn");
    describe.set_version("v1");
    v1::ModelVersion described;
    grpc::ClientContext describe_context;
    ASSERT_TRUE(
        client.admin->DescribeModel(&describe_context, describe, &described)
            .ok());
    for (const auto& tier : described.tiers()) {
      EXPECT_EQ(tier.state(), v1::TierInfo::READY) << tier.name();
      EXPECT_GT(tier.bytes(), 0u);
      EXPECT_EQ(tier.layers_size(), 11);
    }
    EXPECT_LT(described.tiers(2).bytes(),
              described.tiers(1).bytes());  // q32 < q22

    // Resume from the middle of the fc1.weight layer: the rest is
    // byte-identical.
    v1::Manifest manifest;
    std::vector<std::string> layers;
    ASSERT_TRUE(
        client.Pull("cnn", "v1", "q22", &manifest, &layers, 7, 1000).ok());
    EXPECT_EQ(layers[7], first_pull["q22"][7].substr(1000));
    EXPECT_EQ(layers[10], first_pull["q22"][10]);
    EXPECT_EQ(client.Pull("cnn", "v1", "q22", &manifest, &layers, 7, 1 << 30)
                  .error_code(),
              grpc::StatusCode::OUT_OF_RANGE);
    EXPECT_EQ(
        client.Pull("cnn", "v1", "q22", &manifest, &layers, 99, 0).error_code(),
        grpc::StatusCode::OUT_OF_RANGE);
  }
  EXPECT_EQ(server->Stop(), 0);

  auto restarted = ServerProcess::Start(
      kServer, dir + "/data", {"--workers", "2", "--preset", "ultrafast"});
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  RawClient client(restarted->address());
  for (const auto& [tier, before] : first_pull) {
    v1::Manifest manifest;
    std::vector<std::string> layers;
    ASSERT_TRUE(client.Pull("cnn", "v1", tier, &manifest, &layers).ok())
        << tier;
    EXPECT_EQ(layers, before) << tier << " differs after restart";
  }
}

// The value of a sample line "name{labels} value" in a Prometheus exposition,
// or -1.
double Sample(const std::string& exposition, const std::string& series) {
  const size_t at = exposition.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(exposition.substr(at + series.size() + 2));
}

TEST(ServerEndToEnd, ConcurrentPullsOfAColdTierEncodeEachTileOnce) {
  const std::string dir = FreshDir("server_concurrent");
  auto server = ServerProcess::Start(
      kServer, dir + "/data",
      {"--workers", "2", "--preset", "ultrafast", "--grace-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::RegisterModelResponse registered;
  ASSERT_TRUE(
      client.Register("cnn", "v1", "cnn_bn.pt", &registered, "q27").ok());
  std::vector<std::thread> pullers;
  std::vector<std::vector<std::string>> received(10);
  std::vector<grpc::Status> statuses(10);
  v1::Manifest manifest;
  for (int i = 0; i < 10; ++i) {
    pullers.emplace_back([&, i] {
      RawClient own(server->address());
      v1::Manifest m;
      statuses[i] = own.Pull("cnn", "v1", "q27", &m, &received[i]);
      if (i == 0) manifest = m;
    });
  }
  for (std::thread& t : pullers) t.join();
  int64_t tiles = 0;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(received[i], received[0]);
  }
  for (const std::string& layer : received[0]) {
    size_t consumed = 0;
    tiles += static_cast<int64_t>(
        ParsePackedLayer(
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(layer.data()),
                                layer.size()),
            &consumed)
            ->tiles.size());
  }
  EXPECT_GT(tiles,
            static_cast<int64_t>(received[0].size()));  // fc1 spans two tiles
  auto metrics = HttpGet(server->metrics_url());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(Sample(*metrics, "weightcast_tiles_encoded_total{tier=\"q27\"}"),
            tiles)
      << *metrics;
  EXPECT_EQ(Sample(*metrics, "weightcast_layers_encoded_total{tier=\"q27\"}"),
            received[0].size());
  EXPECT_EQ(Sample(*metrics, "weightcast_registrations_total{result=\"ok\"}"),
            1);
  EXPECT_EQ(Sample(*metrics, "weightcast_active_streams"), 0);
  uint64_t total = 0;
  for (const std::string& layer : received[0]) total += layer.size();
  EXPECT_EQ(Sample(*metrics, "weightcast_streamed_bytes_total{tier=\"q27\"}"),
            10.0 * total);

  // promtool, from Debian's prometheus package, validates the live exposition.
  const std::string file = dir + "/metrics.txt";
  { std::ofstream(file) << *metrics; }
  const std::string command = "promtool check metrics < " + file + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe)) output += buffer;
  EXPECT_EQ(pclose(pipe), 0) << output;
}

// Every blob's SHA-256 matches its name; nothing but blobs under blobs/.
void ExpectBlobStoreIntact(const std::string& data_dir) {
  int blobs = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(data_dir + "/blobs")) {
    if (!entry.is_regular_file()) continue;
    const std::vector<uint8_t> bytes =
        ReadFileBytes(entry.path().string()).value();
    EXPECT_EQ(DigestToHex(Sha256(bytes)), entry.path().filename().string())
        << entry.path();
    ++blobs;
  }
  EXPECT_GT(blobs, 0);
}

TEST(ServerEndToEnd, KillNineDuringRegistrationAndEncodingLosesNothingStored) {
  const std::string dir = FreshDir("server_kill9");
  const std::string data = dir + "/data";
  const std::vector<std::string> flags = {
      "--workers", "1", "--preset", "veryfast", "--grace-seconds", "1"};
  auto server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  {
    RawClient client(server->address());
    v1::RegisterModelResponse response;
    ASSERT_TRUE(
        client.Register("mlp", "v1", "mlp.pt", &response, "lossless,q27").ok());
    v1::Manifest manifest;
    std::vector<std::string> layers;
    ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers).ok());
  }
  // 1. Kill -9 in the middle of an upload: the half-received checkpoint never
  // becomes a version.
  {
    RawClient client(server->address());
    std::thread upload([&] {
      v1::RegisterModelResponse response;
      (void)client.Register("big", "v1", "big.pt", &response, "q27");
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    server->Kill();
    upload.join();
  }
  // 2. Kill -9 while a tier is encoding (big.pt's q27 takes seconds on one
  // worker).
  server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  {
    RawClient client(server->address());
    v1::ListModelsResponse list;
    grpc::ClientContext context;
    ASSERT_TRUE(client.admin->ListModels(&context, {}, &list).ok());
    for (const auto& model : list.models()) {
      if (model.name() == "big") {
        EXPECT_THAT(model.versions(),
                    testing::ElementsAre("v1"));  // only if complete
      }
    }
    v1::RegisterModelResponse response;
    grpc::Status status =
        client.Register("big", "v2", "big.pt", &response, "q27");
    ASSERT_TRUE(status.ok()) << status.error_message();
    std::thread pull([&] {
      v1::Manifest manifest;
      std::vector<std::string> layers;
      (void)client.Pull("big", "v2", "q27", &manifest, &layers);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    server->Kill();
    pull.join();
  }
  server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::DescribeModelRequest describe;
  describe.set_model("big");
  describe.set_version("v2");
  v1::ModelVersion described;
  grpc::ClientContext describe_context;
  ASSERT_TRUE(
      client.admin->DescribeModel(&describe_context, describe, &described)
          .ok());
  EXPECT_EQ(described.tiers(0).state(),
            v1::TierInfo::NOT_ENCODED);  // the interrupted encoding starts over
  v1::Manifest manifest;
  std::vector<std::string> layers;
  ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers)
                  .ok());  // what was stored survives
  ExpectLayersVerify(manifest, layers);
  ASSERT_TRUE(client.Pull("big", "v2", "q27", &manifest, &layers).ok());
  ExpectLayersVerify(manifest, layers);
  ExpectBlobStoreIntact(data);
  EXPECT_TRUE(std::filesystem::is_empty(data + "/tmp"));
  if (!HasFailure()) {
    RecordReliability(
        "kill -9 in the middle of an upload, and again in the middle of a tier "
        "encode",
        "the half upload never becomes a version; the interrupted tier is "
        "NOT_ENCODED after restart "
        "and encodes again on request",
        "earlier versions pull and verify; every blob's SHA-256 is its name; "
        "tmp/ emptied");
  }
}

TEST(ServerEndToEnd,
     DiskFullDuringRegistrationIsResourceExhaustedAndLosesNothing) {
  const std::string dir = FreshDir("server_disk_full");
  const std::string data = dir + "/data";
  // No file over 2 MB: the 5.5 MB of cnn_bn.pt cannot be stored, the 400 KB MLP
  // can.
  auto server = ServerProcess::Start(
      kServer, data, {"--preset", "ultrafast", "--grace-seconds", "1"},
      2 << 20);
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::RegisterModelResponse response;
  ASSERT_TRUE(
      client.Register("mlp", "v1", "mlp.pt", &response, "lossless").ok());
  const grpc::Status full =
      client.Register("cnn", "v1", "cnn_bn.pt", &response, "lossless");
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << full.error_message();
  v1::ListModelsResponse list;
  grpc::ClientContext context;
  ASSERT_TRUE(client.admin->ListModels(&context, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 1);  // no half-registered cnn
  v1::Manifest manifest;
  std::vector<std::string> layers;
  ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers).ok());
  ExpectLayersVerify(manifest, layers);
  EXPECT_EQ(server->Stop(), 0);
  ExpectBlobStoreIntact(data);
  EXPECT_TRUE(std::filesystem::is_empty(data + "/tmp"));
  if (!HasFailure()) {
    RecordReliability(
        "the disk fills during an upload (no file may grow past 2 MB; a 5.5 MB "
        "checkpoint)",
        absl::StrCat("RESOURCE_EXHAUSTED \"", full.error_message(), "\""),
        "no version added; the MLP registered before pulls and verifies; tmp/ "
        "emptied; blob hashes match");
  }
}

TEST(ServerEndToEnd, DiskFullDuringEncodingFailsThatTierAndLosesNothing) {
  const std::string dir = FreshDir("server_disk_full_encoding");
  const std::string data = dir + "/data";
  const std::vector<std::string> flags = {"--preset", "ultrafast",
                                          "--grace-seconds", "1",
                                          "--no-encode-on-register"};
  v1::Manifest manifest;
  std::vector<std::string> layers;
  {
    auto server = ServerProcess::Start(kServer, data, flags);
    ASSERT_TRUE(server.ok()) << server.status();
    RawClient client(server->address());
    v1::RegisterModelResponse response;
    ASSERT_TRUE(
        client.Register("mlp", "v1", "mlp.pt", &response, "lossless").ok());
    ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers).ok());
    ASSERT_TRUE(
        client.Register("cnn", "v1", "cnn_bn.pt", &response, "lossless").ok());
    EXPECT_EQ(server->Stop(), 0);
  }
  // The disk fills later: no file may grow past 1 MB, and cnn_bn's fc1
  // (5408 x 256) is ~1.4 MB lossless.
  grpc::Status full;
  {
    auto server = ServerProcess::Start(kServer, data, flags, 1 << 20);
    ASSERT_TRUE(server.ok()) << server.status();
    RawClient client(server->address());
    full = client.Pull("cnn", "v1", "lossless", &manifest, &layers);
    EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << full.error_message();
    EXPECT_THAT(full.error_message(), HasSubstr("write failed"));
    ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers)
                    .ok());  // what was stored survives
    ExpectLayersVerify(manifest, layers);
    v1::DescribeModelRequest describe;
    describe.set_model("cnn");
    describe.set_version("v1");
    v1::ModelVersion described;
    grpc::ClientContext context;
    ASSERT_TRUE(
        client.admin->DescribeModel(&context, describe, &described).ok());
    EXPECT_EQ(described.tiers(0).state(), v1::TierInfo::FAILED);
    EXPECT_EQ(server->Stop(), 0);
  }
  ExpectBlobStoreIntact(data);
  EXPECT_TRUE(std::filesystem::is_empty(data + "/tmp"));
  // With room again, the failed tier encodes on its next request.
  auto server = ServerProcess::Start(kServer, data, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  ASSERT_TRUE(client.Pull("cnn", "v1", "lossless", &manifest, &layers).ok());
  ExpectLayersVerify(manifest, layers);
  EXPECT_EQ(server->Stop(), 0);
  ExpectBlobStoreIntact(data);
  if (!HasFailure()) {
    RecordReliability(
        "the disk fills while a tier encodes (no file may grow past 1 MB; a "
        "5408x256 layer lossless)",
        absl::StrCat("the pull waiting for it gets RESOURCE_EXHAUSTED \"...",
                     full.error_message().substr(
                         full.error_message().find("write failed")),
                     "\"; the tier is FAILED"),
        "the MLP registered before pulls and verifies; tmp/ emptied; blob "
        "hashes match; with room again the "
        "tier encodes and verifies");
  }
}

TEST(ServerEndToEnd,
     CacheBudgetEvictsLeastRecentlyUsedTiersAndReencodesOnDemand) {
  const std::string dir = FreshDir("server_cache");
  // A 1-byte budget: only the pinned first tier and the tier encoded last stay.
  auto server = ServerProcess::Start(
      kServer, dir + "/data",
      {"--preset", "ultrafast", "--grace-seconds", "1", "--cache-bytes", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::RegisterModelResponse registered;
  ASSERT_TRUE(
      client.Register("cnn", "v1", "cnn_bn.pt", &registered, "lossless,q22,q32")
          .ok());
  std::map<std::string, std::vector<std::string>> first;
  for (const char* tier : {"lossless", "q22", "q32"}) {
    v1::Manifest manifest;
    const grpc::Status pulled =
        client.Pull("cnn", "v1", tier, &manifest, &first[tier]);
    ASSERT_TRUE(pulled.ok()) << tier << ": " << pulled.error_message();
  }
  auto states = [&] {
    v1::DescribeModelRequest request;
    request.set_model("cnn");
    request.set_version("v1");
    v1::ModelVersion described;
    grpc::ClientContext context;
    EXPECT_TRUE(
        client.admin->DescribeModel(&context, request, &described).ok());
    std::vector<v1::TierInfo::State> out;
    for (const auto& t : described.tiers()) out.push_back(t.state());
    return out;
  };
  EXPECT_THAT(states(), testing::ElementsAre(v1::TierInfo::READY,
                                             v1::TierInfo::NOT_ENCODED,
                                             v1::TierInfo::READY));
  // The evicted tier comes back, encoded again, byte-identical.
  v1::Manifest manifest;
  std::vector<std::string> again;
  ASSERT_TRUE(client.Pull("cnn", "v1", "q22", &manifest, &again).ok());
  EXPECT_EQ(again, first["q22"]);
  EXPECT_THAT(states(),
              testing::ElementsAre(v1::TierInfo::READY, v1::TierInfo::READY,
                                   v1::TierInfo::NOT_ENCODED));
  auto metrics = HttpGet(server->metrics_url());
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(Sample(*metrics, "weightcast_cache_evictions_total"), 2);
  EXPECT_EQ(Sample(*metrics, "weightcast_cache_misses_total"), 4);
  ExpectBlobStoreIntact(dir + "/data");
}

TEST(ServerEndToEnd, SlowAndStalledClientsMeetTheServersDeadlines) {
  const std::string dir = FreshDir("server_deadlines");
  const std::string data = dir + "/data";
  auto server =
      ServerProcess::Start(kServer, data,
                           {"--preset", "ultrafast", "--grace-seconds", "1",
                            "--upload-seconds", "2", "--pull-seconds", "2"});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::RegisterModelResponse response;
  ASSERT_TRUE(
      client.Register("cnn", "v1", "cnn_bn.pt", &response, "lossless").ok());
  // Encoded before the pulls below, which have 2 s each (a loaded machine may
  // take longer to encode it).
  ASSERT_TRUE(client.WarmUntilReady("cnn", "v1", 120));
  const auto call_deadline = [] {
    return std::chrono::system_clock::now() + std::chrono::seconds(30);
  };
  const std::vector<uint8_t> checkpoint =
      ReadFileBytes(FixtureDir() + "/mlp.pt").value();
  v1::RegisterModelRequest header;
  header.mutable_header()->set_model("mlp");
  header.mutable_header()->set_version("v1");
  header.mutable_header()->set_total_bytes(checkpoint.size());

  // An upload trickling 4 KB every 200 ms: ended by the server with its own
  // status.
  grpc::Status trickled;
  {
    grpc::ClientContext context;
    context.set_deadline(call_deadline());
    auto writer = client.admin->RegisterModel(&context, &response);
    writer->Write(header);
    v1::RegisterModelRequest chunk;
    for (size_t offset = 0; offset < checkpoint.size();
         offset += 4096) {  // ~100 writes, 20 s at most
      chunk.set_chunk(checkpoint.data() + offset,
                      std::min<size_t>(4096, checkpoint.size() - offset));
      if (!writer->Write(chunk)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    trickled = writer->Finish();
  }
  EXPECT_EQ(trickled.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << trickled.error_message();
  EXPECT_THAT(trickled.error_message(), HasSubstr("--upload-seconds 2"));

  // An upload that sends its header and then nothing: cancelled by the server.
  const auto stalled_at = std::chrono::steady_clock::now();
  grpc::Status stalled;
  {
    grpc::ClientContext context;
    context.set_deadline(call_deadline());
    auto writer = client.admin->RegisterModel(&context, &response);
    writer->Write(header);
    stalled =
        writer
            ->Finish();  // without WritesDone: only the server can end the call
  }
  const double stalled_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                    stalled_at)
          .count();
  EXPECT_EQ(stalled.error_code(), grpc::StatusCode::CANCELLED)
      << stalled.error_message();
  EXPECT_LT(stalled_seconds, 10);

  // A pull whose client stops reading after the manifest (on a 64 KiB window,
  // so the server's writes block): ended by the server, slot freed. Its handler
  // is usually blocked in a write at the deadline and cancelled (CANCELLED);
  // on a loaded machine it may still be filling the window then and end the
  // call itself (DEADLINE_EXCEEDED).
  grpc::Status unread;
  {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
    auto small_window = v1::Distribution::NewStub(grpc::CreateCustomChannel(
        server->address(), grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(call_deadline());
    v1::PullRequest request;
    request.set_model("cnn");
    request.set_version("v1");
    request.mutable_tier()->set_name("lossless");
    auto reader = small_window->Pull(&context, request);
    v1::PullResponse message;
    ASSERT_TRUE(reader->Read(&message));
    std::this_thread::sleep_for(
        std::chrono::seconds(6));  // past 2 s + the 2 s before cancelling
    while (reader->Read(&message)) {
    }
    unread = reader->Finish();
  }
  EXPECT_THAT(unread.error_code(),
              testing::AnyOf(grpc::StatusCode::CANCELLED,
                             grpc::StatusCode::DEADLINE_EXCEEDED))
      << unread.error_message();
  const bool unread_cancelled =
      unread.error_code() == grpc::StatusCode::CANCELLED;
  auto metrics = HttpGet(server->metrics_url());
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(Sample(*metrics, "weightcast_active_streams"), 0);
  EXPECT_EQ(Sample(*metrics, "weightcast_deadline_cancels_total"),
            unread_cancelled ? 2 : 1);
  EXPECT_EQ(
      Sample(*metrics, "weightcast_registrations_total{result=\"deadline\"}"),
      2);
  EXPECT_EQ(Sample(*metrics,
                   "weightcast_pull_errors_total{code=\"DEADLINE_EXCEEDED\"}"),
            1);

  // Nothing stored was touched; a prompt pull and upload still work.
  v1::Manifest manifest;
  std::vector<std::string> layers;
  ASSERT_TRUE(client.Pull("cnn", "v1", "lossless", &manifest, &layers).ok());
  ExpectLayersVerify(manifest, layers);
  v1::ListModelsResponse list;
  grpc::ClientContext list_context;
  ASSERT_TRUE(client.admin->ListModels(&list_context, {}, &list).ok());
  EXPECT_EQ(list.models_size(), 1);
  ASSERT_TRUE(
      client.Register("mlp", "v1", "mlp.pt", &response, "lossless").ok());
  EXPECT_EQ(server->Stop(), 0);
  ExpectBlobStoreIntact(data);
  EXPECT_TRUE(std::filesystem::is_empty(data + "/tmp"));
  if (!HasFailure()) {
    RecordReliability(
        "an upload trickling 4 KB every 200 ms past --upload-seconds 2",
        absl::StrCat("DEADLINE_EXCEEDED \"", trickled.error_message(), "\""),
        "no version added; the upload's temporary files removed; the same "
        "upload sent promptly registers");
    RecordReliability(
        "an upload that sends its header and then nothing; a pull whose client "
        "stops reading",
        absl::StrCat("both cancelled by the server 2 s after their limit (the "
                     "upload after ",
                     absl::StrFormat("%.1f", stalled_seconds),
                     " s; the client sees CANCELLED); "
                     "the pull's stream slot freed"),
        "cnn/v1 pulls and verifies; blob hashes match");
  }
}

TEST(ServerEndToEnd, StatusCodesMeanWhatGrpcSays) {
  const std::string dir = FreshDir("server_codes");
  auto server =
      ServerProcess::Start(kServer, dir + "/data",
                           {"--preset", "ultrafast", "--grace-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  RawClient client(server->address());
  v1::RegisterModelResponse response;
  ASSERT_TRUE(client.Register("mlp", "v1", "mlp.pt", &response).ok());
  EXPECT_EQ(client.Register("mlp", "v1", "mlp.pt", &response).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  grpc::Status bad = client.Register("mlp", "v2", "nan.pt", &response);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("fc1.weight"));
  EXPECT_EQ(client.Register("mlp", "v3", "not_a_checkpoint.pt", &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::Manifest manifest;
  std::vector<std::string> layers;
  EXPECT_EQ(
      client.Pull("nope", "latest", "q22", &manifest, &layers).error_code(),
      grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(client.Pull("mlp", "v9", "q22", &manifest, &layers).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(client.Pull("mlp", "v1", "q42", &manifest, &layers).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(client.Pull("mlp", "v1", "q99", &manifest, &layers).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // The good version is intact after the failures.
  ASSERT_TRUE(client.Pull("mlp", "v1", "lossless", &manifest, &layers).ok());
  ExpectLayersVerify(manifest, layers);
  if (!HasFailure()) {
    RecordReliability(
        "a checkpoint holding NaN; a text file as a checkpoint; a version "
        "label taken",
        "INVALID_ARGUMENT naming the tensor (fc1.weight); INVALID_ARGUMENT; "
        "ALREADY_EXISTS",
        "mlp/v1 pulls and every layer verifies");
    RecordReliability(
        "pulls of an unknown model, version or tier (q42); of a name that is "
        "no tier (q99)",
        "NOT_FOUND; INVALID_ARGUMENT", "nothing changes");
  }

  // grpc.health.v1, through the SDK (what `weightcast health` and the image's
  // health check use).
  EXPECT_EQ(Client::Connect({server->address()}).value()->Health().value(),
            true);
  const std::string services = ReflectionListServices(client.channel);
  EXPECT_THAT(services, HasSubstr("weightcast.v1.Admin"));
  EXPECT_THAT(services, HasSubstr("weightcast.v1.Distribution"));
  EXPECT_THAT(services, HasSubstr("grpc.health.v1.Health"));
  ASSERT_EQ(server->Stop(), 0);
}

}  // namespace
}  // namespace weightcast
