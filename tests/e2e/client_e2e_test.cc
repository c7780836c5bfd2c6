// The client SDK against the real weightcastd: tier selection, a server killed
// mid-pull and restarted (the pull resumes and the output is byte-identical),
// and a corrupted blob on disk (DATA_LOSS naming the layer).

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "common/tensor/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

std::vector<std::string> Flags(int port) {
  return {"--listen",        "127.0.0.1:" + std::to_string(port),
          "--workers",       "2",
          "--preset",        "ultrafast",
          "--grace-seconds", "1"};
}

TEST(ClientEndToEnd, SelectsTiersByBudgetFidelityAndLink) {
  const std::string dir = FreshDir("client_select");
  const int port = FreeLoopbackPort();
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(port));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({"127.0.0.1:" + std::to_string(port)}).value();
  ASSERT_TRUE(client
                  ->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt",
                              "lossless,q22,q32"})
                  .ok());
  PullOptions warmup{"cnn", "v1", {"q22"}, ""};
  for (const char* tier : {"lossless", "q22", "q32"}) {
    warmup.tier.name = tier;
    ASSERT_TRUE(client->Pull(warmup).ok()) << tier;
  }
  const ModelInfo info = client->Describe("cnn", "latest").value();
  ASSERT_EQ(info.tiers.size(), 3u);
  const uint64_t q22 = info.tiers[1].bytes, q32 = info.tiers[2].bytes;
  EXPECT_EQ(SelectTier(info, {.max_bytes = q22}).value(), "q22");
  EXPECT_EQ(SelectTier(info, {.max_bytes = q22 - 1}).value(), "q32");
  EXPECT_EQ(SelectTier(info, {.max_bytes = q32 - 1}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(
      SelectTier(info, {.min_sqnr_db = info.tiers[1].worst_sqnr_db}).value(),
      "lossless");
  // 30 s at a link that carries q22 but not lossless in that time.
  const double bits_per_second = (q22 + 1) * 8.0 / 30;
  EXPECT_EQ(SelectTier(info, {.bits_per_second = bits_per_second,
                              .within = absl::Seconds(30)})
                .value(),
            "q22");
  EXPECT_EQ(SelectTier(info, {.name = "q99"}).status().code(),
            absl::StatusCode::kInvalidArgument);  // not a tier at all
  EXPECT_EQ(SelectTier(info, {.name = "q30"}).status().code(),
            absl::StatusCode::kNotFound);  // a tier this version lacks
}

TEST(ClientEndToEnd, StreamedOutputAndTileJobsAreByteIdenticalToTheOldPath) {
  const std::string dir = FreshDir("client_streamed");
  const int port = FreeLoopbackPort();
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(port));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({"127.0.0.1:" + std::to_string(port)}).value();
  // HEVC, int8 + zstd, float and integer passthrough layers (batch norms).
  ASSERT_TRUE(
      client->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "q27"}).ok());
  PullOptions options{"cnn", "v1", {"q27"}, dir + "/whole.safetensors"};
  options.stream_output = false;
  auto whole = client->Pull(options);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(whole->streamed_output);
  options.stream_output = true;
  options.output_path = dir + "/streamed.safetensors";
  options.decode_threads = 3;  // layers finish out of order
  auto streamed = client->Pull(options);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->streamed_output);
  EXPECT_EQ(ReadFileBytes(dir + "/streamed.safetensors").value(),
            ReadFileBytes(dir + "/whole.safetensors").value());
  EXPECT_FALSE(std::filesystem::exists(dir + "/streamed.safetensors.tmp"));
  // A file and an in-memory model at once: the model is collected (the
  // streamed path once left it empty) and the file is the same.
  Model in_memory;
  options.output_model = &in_memory;
  options.output_path = dir + "/with_model.safetensors";
  auto with_model = client->Pull(options);
  ASSERT_TRUE(with_model.ok()) << with_model.status();
  EXPECT_FALSE(with_model->streamed_output);
  EXPECT_FALSE(in_memory.tensors.empty());
  EXPECT_EQ(ReadFileBytes(dir + "/with_model.safetensors").value(),
            ReadFileBytes(dir + "/whole.safetensors").value());
  options.output_model = nullptr;
  // The same for a .pt output (a torch.save archive whose CRCs are taken as
  // the layers pass).
  options.stream_output = false;
  options.output_path = dir + "/whole.pt";
  ASSERT_TRUE(client->Pull(options).ok());
  options.stream_output = true;
  options.output_path = dir + "/streamed.pt";
  auto streamed_pt = client->Pull(options);
  ASSERT_TRUE(streamed_pt.ok()) << streamed_pt.status();
  EXPECT_TRUE(streamed_pt->streamed_output);
  EXPECT_EQ(ReadFileBytes(dir + "/streamed.pt").value(),
            ReadFileBytes(dir + "/whole.pt").value());
  // A layer of three tiles, decoded as one job per tile and as one job.
  ASSERT_TRUE(
      client->Register({"tall", "v1", kFixtures + "/tall.pt", "q27"}).ok());
  PullOptions tall{"tall", "v1", {"q27"}, dir + "/tiles.safetensors"};
  tall.decode_threads = 2;
  ASSERT_TRUE(client->Pull(tall).ok());
  tall.tile_jobs = false;
  tall.stream_output = false;
  tall.output_path = dir + "/layers.safetensors";
  ASSERT_TRUE(client->Pull(tall).ok());
  EXPECT_EQ(ReadFileBytes(dir + "/tiles.safetensors").value(),
            ReadFileBytes(dir + "/layers.safetensors").value());
  const ModelInfo described = client->Describe("tall", "v1").value();
  ASSERT_EQ(described.tiers.size(), 1u);
  ASSERT_FALSE(described.tiers[0].layers.empty());
  EXPECT_EQ(described.tiers[0].layers[0].name, "embed.weight");
  EXPECT_EQ(described.tiers[0].layers[0].codec, "LAYER_CODEC_HEVC");
  // int8 outputs stream too (their scales sized by the manifest's schemes):
  // per-tensor, per-channel and passthrough layers, both file kinds.
  options.int8_output = true;
  for (const std::string kind : {".safetensors", ".pt"}) {
    options.stream_output = false;
    options.output_path = dir + "/whole_int8" + kind;
    ASSERT_TRUE(client->Pull(options).ok());
    options.stream_output = true;
    options.output_path = dir + "/streamed_int8" + kind;
    auto int8 = client->Pull(options);
    ASSERT_TRUE(int8.ok()) << int8.status();
    EXPECT_TRUE(int8->streamed_output) << kind;
    EXPECT_EQ(ReadFileBytes(dir + "/streamed_int8" + kind).value(),
              ReadFileBytes(dir + "/whole_int8" + kind).value())
        << kind;
  }
  // Sharding needs a pull that is not progressive.
  options.shard_bytes = 4096;
  options.output_path = dir + "/shards";
  options.coarse_tier = "q37";
  EXPECT_EQ(client->Pull(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientEndToEnd, ServerKilledMidPullResumesToAByteIdenticalModel) {
  const std::string dir = FreshDir("client_resume");
  const int port = FreeLoopbackPort();
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(port));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({"127.0.0.1:" + std::to_string(port)}).value();
  ASSERT_TRUE(
      client->Register({"big", "v1", kFixtures + "/big.pt", "lossless"}).ok());
  PullOptions options{"big", "v1", {"lossless"}, dir + "/whole.safetensors"};
  options.stream_output = false;  // the whole-model writer
  auto whole = client->Pull(options);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(whole->streamed_output);
  ASSERT_GT(whole->bytes,
            uint64_t{6} << 20);  // far more than gRPC's flow-control windows

  bool killed = false;
  options.output_path = dir + "/resumed.safetensors";
  options.stream_output = true;  // written layer by layer across the resume
  options.max_bytes_per_second = 4e6;  // a 2 s pull: the kill lands mid-stream
  options.progress = [&](const PullProgress& p) {
    if (killed || p.bytes_received == 0 || p.bytes_received >= p.total_bytes)
      return;
    killed = true;
    server->Kill();  // SIGKILL mid-stream
    auto again = ServerProcess::Start(kServer, dir + "/data", Flags(port));
    ASSERT_TRUE(again.ok()) << again.status();
    *server = std::move(*again);
  };
  auto resumed = client->Pull(options);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(killed);
  EXPECT_GE(resumed->reconnects, 1);
  EXPECT_TRUE(resumed->streamed_output);
  EXPECT_EQ(ReadFileBytes(dir + "/resumed.safetensors").value(),
            ReadFileBytes(dir + "/whole.safetensors").value());
  if (!HasFailure()) {
    RecordReliability(
        "weightcastd killed (SIGKILL) in the middle of a pull, then restarted",
        "the SDK reconnects with backoff and resumes at (layer, offset)",
        "the output is byte-identical to an uninterrupted pull");
  }
}

TEST(ClientEndToEnd, SigtermDrainsRunningPullsAndRefusesNewOnes) {
  const std::string dir = FreshDir("client_drain");
  const int port = FreeLoopbackPort();
  std::vector<std::string> flags = Flags(port);
  flags.back() = "10";  // --grace-seconds 10: long enough for the running pull
  auto server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({"127.0.0.1:" + std::to_string(port)}).value();
  ASSERT_TRUE(
      client->Register({"big", "v1", kFixtures + "/big.pt", "lossless"}).ok());
  ASSERT_TRUE(client->Pull({"big", "v1", {"lossless"}, ""})
                  .ok());  // encoded and cached
  PullOptions slow{"big", "v1", {"lossless"}, dir + "/drained.safetensors"};
  slow.max_bytes_per_second = 4e6;  // about 2 s
  slow.max_reconnects = 0;          // a reconnect would hide a cut stream
  absl::StatusOr<PullResult> running;
  std::thread pull([&] { running = client->Pull(slow); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  server->Terminate();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto refused = Client::Connect({"127.0.0.1:" + std::to_string(port)})
                     .value()
                     ->Pull({"big", "v1", {"lossless"}, ""});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable)
      << refused.status();
  pull.join();
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->reconnects, 0);
  EXPECT_EQ(server->Stop(), 0);
}

TEST(ClientEndToEnd, SigtermMidEncodeStopsTheEncodeAndTheTierIsEncodedAgain) {
  const std::string dir = FreshDir("client_sigterm_encode");
  const int port = FreeLoopbackPort();
  std::vector<std::string> flags = Flags(port);
  // One worker at a slow preset: the three 3000x96 tiles of tall.pt's
  // embedding take seconds each, so the SIGTERM lands mid-layer.
  flags[3] = "1";
  flags[5] = "placebo";
  flags.push_back("--no-encode-on-register");
  auto server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto client = Client::Connect({address}).value();
  ASSERT_TRUE(
      client->Register({"tall", "v1", kFixtures + "/tall.pt", "lossless,q22"})
          .ok());
  absl::StatusOr<PullResult> waiting;
  PullOptions wait{"tall", "v1", {"q22"}, ""};
  wait.max_reconnects = 0;  // the server's own answer, not a retry's
  std::thread pull([&] { waiting = client->Pull(wait); });
  // Bounded: until the describe says ENCODING, at most 30 s.
  bool encoding = false;
  for (int i = 0; i < 300 && !encoding; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const absl::StatusOr<ModelInfo> info = client->Describe("tall", "v1");
    encoding = info.ok() && info->tiers.size() == 2 &&
               info->tiers[1].state == "ENCODING";
  }
  ASSERT_TRUE(encoding);
  const auto sent = std::chrono::steady_clock::now();
  server->Terminate();
  pull.join();
  // UNAVAILABLE from the store's shutdown; in about one run of three gRPC's
  // cancel at the end of the grace period reached the client first.
  EXPECT_THAT(waiting.status().code(),
              ::testing::AnyOf(absl::StatusCode::kUnavailable,
                               absl::StatusCode::kCancelled))
      << waiting.status();
  EXPECT_EQ(server->Stop(), 0);  // a clean exit
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - sent)
          .count();

  // Cancelled, not failed and not finished: after a restart the tier is
  // NOT_ENCODED, and the next pull encodes it.
  flags[5] = "ultrafast";
  server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  client = Client::Connect({address}).value();
  const ModelInfo after = client->Describe("tall", "v1").value();
  ASSERT_EQ(after.tiers.size(), 2u);
  EXPECT_EQ(after.tiers[1].state, "NOT_ENCODED") << after.tiers[1].error;
  auto pulled = client->Pull({"tall", "v1", {"q22"}, dir + "/after.pt"});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  RecordReliability(
      "SIGTERM while a layer of three HEVC tiles encodes (--preset placebo, "
      "one worker), a pull waiting for it",
      absl::StrCat("the encode stops at its next tile; the waiting pull ends "
                   "(UNAVAILABLE, or CANCELLED at the grace deadline); "
                   "weightcastd exits 0 (",
                   std::lround(seconds * 10) / 10.0, " s after the signal)"),
      "after a restart the tier is NOT_ENCODED (not FAILED) and a pull "
      "encodes it again");
}

std::string Pem(const std::string& path) {
  const std::vector<uint8_t> bytes = ReadFileBytes(path).value();
  return std::string(bytes.begin(), bytes.end());
}

// Certificates made at test time with openssl: a CA, a server certificate for
// 127.0.0.1, and a client certificate, all signed by the CA.
void MakeCertificates(const std::string& dir) {
  const std::string script = "cd " + dir + R"sh( && (
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=device-1 -keyout client.key -out client.csr &&
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out client.pem
  ) > openssl.log 2>&1)sh";
  ASSERT_EQ(std::system(script.c_str()), 0)
      << "openssl failed; see " << dir << "/openssl.log";
}

TEST(ClientEndToEnd, MutualTlsConnectsOnlyWithTheRightCertificates) {
  const std::string dir = FreshDir("client_tls");
  MakeCertificates(dir);
  const int port = FreeLoopbackPort();
  std::vector<std::string> flags = Flags(port);
  for (const char* f : {"--tls-cert", "server.pem", "--tls-key", "server.key",
                        "--tls-client-ca", "ca.pem"}) {
    flags.push_back(f[0] == '-' ? std::string(f) : dir + "/" + f);
  }
  auto server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  ConnectOptions options{"127.0.0.1:" + std::to_string(port),
                         absl::Seconds(10)};
  options.tls_root_certs_pem = Pem(dir + "/ca.pem");
  options.tls_cert_chain_pem = Pem(dir + "/client.pem");
  options.tls_private_key_pem = Pem(dir + "/client.key");
  auto client = Client::Connect(options).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  ASSERT_TRUE(
      client->Pull({"mlp", "v1", {"lossless"}, dir + "/mlp.safetensors"}).ok());
  // Plaintext, and TLS without a client certificate, are both refused.
  auto plaintext = Client::Connect({options.address, absl::Seconds(5)}).value();
  EXPECT_EQ(plaintext->List().status().code(), absl::StatusCode::kUnavailable);
  ConnectOptions no_client_cert{options.address, absl::Seconds(5)};
  no_client_cert.tls_root_certs_pem = options.tls_root_certs_pem;
  EXPECT_EQ(Client::Connect(no_client_cert).value()->List().status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(ClientEndToEnd, CorruptBlobOnDiskIsDataLossNamingTheLayer) {
  const std::string dir = FreshDir("client_corrupt");
  const int port = FreeLoopbackPort();
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(port));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({"127.0.0.1:" + std::to_string(port)}).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "q27"}).ok());
  ASSERT_TRUE(client->Pull({"mlp", "v1", {"q27"}, dir + "/ok.pt"}).ok());
  // The largest blob is fc1.weight's packed layer: flip a byte in its payload.
  std::filesystem::path largest;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(dir + "/data/blobs")) {
    if (entry.is_regular_file() &&
        (largest.empty() ||
         entry.file_size() > std::filesystem::file_size(largest)) &&
        entry.file_size() < 400000) {  // not the source checkpoint
      largest = entry.path();
    }
  }
  std::vector<uint8_t> bytes = ReadFileBytes(largest.string()).value();
  bytes[bytes.size() / 2] ^= 0x40;
  {
    std::ofstream(largest, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  auto pulled = client->Pull({"mlp", "v1", {"q27"}, dir + "/bad.pt"});
  EXPECT_EQ(pulled.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(pulled.status().message()), HasSubstr("fc1.weight"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/bad.pt"));
  if (!HasFailure()) {
    RecordReliability(
        "a byte flipped in a stored layer blob on the server's disk",
        "the client refetches the layer once, then DATA_LOSS naming fc1.weight",
        "no output file written under the final name");
  }
}

}  // namespace
}  // namespace weightcast
