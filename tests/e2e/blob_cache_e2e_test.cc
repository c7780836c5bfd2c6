// Blobs for many readers: the real weightcastd serving its blobs over HTTP
// (--blob-listen) behind a real nginx proxy_cache (--blob-base-url pointing at
// it). A pull over HTTP gives the same bytes as one over gRPC; the second pull
// is served from nginx's cache (its access log); nginx stopped mid-pull makes
// the SDK fall back to the gRPC stream, resuming where HTTP stopped; with
// --blob-tokens the SDK's blob GETs carry its token and a GET without one is
// 401.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/nginx_process.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

// weightcastd with its blob listener on `blob_port` and manifests naming the
// nginx on `nginx_port`.
std::vector<std::string> Flags(int port, int blob_port, int nginx_port) {
  return {"--listen",        absl::StrCat("127.0.0.1:", port),
          "--blob-listen",   absl::StrCat("127.0.0.1:", blob_port),
          "--blob-base-url", absl::StrCat("http://127.0.0.1:", nginx_port),
          "--workers",       "2",
          "--preset",        "ultrafast",
          "--grace-seconds", "1"};
}

int connect_socket(int fd, const sockaddr_in& addr) {
  return connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
}

struct Site {
  std::string dir;
  int port = 0;
  std::optional<ServerProcess> server;
  std::optional<NginxProcess> nginx;
  std::unique_ptr<Client> client;
};

void StartSite(const std::string& name, Site* site,
               int64_t nginx_limit_rate = 0) {
  site->dir = FreshDir(name);
  site->port = FreeLoopbackPort();
  const int blob_port = FreeLoopbackPort();
  const int nginx_port = FreeLoopbackPort();
  auto server = ServerProcess::Start(kServer, site->dir + "/data",
                                     Flags(site->port, blob_port, nginx_port));
  ASSERT_TRUE(server.ok()) << server.status();
  site->server.emplace(*std::move(server));
  auto nginx = NginxProcess::Start(site->dir + "/nginx", nginx_port, blob_port,
                                   nginx_limit_rate);
  ASSERT_TRUE(nginx.ok()) << nginx.status();
  site->nginx.emplace(*std::move(nginx));
  auto client = Client::Connect({absl::StrCat("127.0.0.1:", site->port)});
  ASSERT_TRUE(client.ok()) << client.status();
  site->client = *std::move(client);
}

TEST(BlobCacheEndToEnd, PullThroughNginxIsByteIdenticalAndTheSecondIsCached) {
  Site site;
  ASSERT_NO_FATAL_FAILURE(StartSite("blob_cache_pull", &site));
  ASSERT_TRUE(
      site.client
          ->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "lossless,q27"})
          .ok());
  for (const char* tier : {"lossless", "q27"}) {
    SCOPED_TRACE(tier);
    PullOptions grpc_only{
        "cnn", "v1", {tier}, absl::StrCat(site.dir, "/grpc-", tier, ".pt")};
    grpc_only.http_blobs = false;
    auto by_grpc = site.client->Pull(grpc_only);
    ASSERT_TRUE(by_grpc.ok()) << by_grpc.status();
    EXPECT_EQ(by_grpc->http_layers, 0);

    const NginxProcess::LogCounts before = site.nginx->ReadLog();
    PullOptions options{
        "cnn", "v1", {tier}, absl::StrCat(site.dir, "/http-", tier, ".pt")};
    auto first = site.client->Pull(options);
    ASSERT_TRUE(first.ok()) << first.status();
    const int layers = first->http_layers;
    EXPECT_GT(layers, 3);
    EXPECT_FALSE(first->http_fallback);
    EXPECT_EQ(ReadFileBytes(options.output_path).value(),
              ReadFileBytes(grpc_only.output_path).value());
    // One origin request per blob: tiers share the blobs of the layers they
    // code alike (q27 fetches only its picture layers from weightcastd).
    const NginxProcess::LogCounts after_first = site.nginx->ReadLog();
    EXPECT_EQ(after_first.requests - before.requests, layers);
    EXPECT_EQ(after_first.origin_requests, after_first.blobs);
    EXPECT_GT(after_first.origin_requests, before.origin_requests);

    options.output_path = absl::StrCat(site.dir, "/again-", tier, ".pt");
    auto second = site.client->Pull(options);
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_EQ(second->http_layers, layers);
    EXPECT_EQ(ReadFileBytes(options.output_path).value(),
              ReadFileBytes(grpc_only.output_path).value());
    const NginxProcess::LogCounts after_second = site.nginx->ReadLog();
    EXPECT_EQ(after_second.requests - after_first.requests, layers);
    EXPECT_EQ(after_second.hits - after_first.hits, layers);
    EXPECT_EQ(after_second.origin_requests, after_first.origin_requests)
        << "the second pull reached weightcastd";
  }
  // weightcastd counts what it answered: one 200 per origin request.
  const NginxProcess::LogCounts end = site.nginx->ReadLog();
  auto metrics = HttpGet(site.server->metrics_url());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics, ::testing::HasSubstr(absl::StrCat(
                            "weightcast_blob_requests_total{code=\"200\"} ",
                            end.origin_requests, "\n")));
  if (!HasFailure()) {
    RecordReliability(
        "pulls of two tiers through nginx proxy_cache in front of weightcastd "
        "--blob-listen",
        "byte-identical to the gRPC pull; one origin request per distinct "
        "blob",
        "the second pull all cache hits, no origin request");
  }
}

// A layer of three HEVC tiles over HTTP: its tiles are handed to the decoder
// as curl writes the blob (the default), and the output is the one a gRPC
// pull decoding the layer once whole writes.
TEST(BlobCacheEndToEnd, ATiledLayerOverHttpIsTheOneTheStreamGives) {
  Site site;
  ASSERT_NO_FATAL_FAILURE(StartSite("blob_cache_tiles", &site));
  ASSERT_TRUE(
      site.client->Register({"tall", "v1", kFixtures + "/tall.pt", "q27"})
          .ok());
  PullOptions whole{"tall", "v1", {"q27"}, site.dir + "/whole.safetensors"};
  whole.http_blobs = false;
  whole.decode_arriving = false;
  whole.decode_threads = 2;
  auto by_grpc = site.client->Pull(whole);
  ASSERT_TRUE(by_grpc.ok()) << by_grpc.status();
  PullOptions arriving = whole;
  arriving.http_blobs = true;
  arriving.decode_arriving = true;
  arriving.output_path = site.dir + "/arriving.safetensors";
  auto by_http = site.client->Pull(arriving);
  ASSERT_TRUE(by_http.ok()) << by_http.status();
  EXPECT_GT(by_http->http_layers, 0);
  EXPECT_FALSE(by_http->http_fallback);
  EXPECT_EQ(ReadFileBytes(arriving.output_path).value(),
            ReadFileBytes(whole.output_path).value());
  const ModelInfo described = site.client->Describe("tall", "v1").value();
  ASSERT_FALSE(described.tiers.at(0).layers.empty());
  EXPECT_EQ(described.tiers[0].layers[0].codec, "LAYER_CODEC_HEVC");
}

TEST(BlobCacheEndToEnd, NginxStoppedMidPullFallsBackToTheGrpcStream) {
  Site site;
  // nginx sends at 1 MB/s: stopped 300 ms in, most of the blob is still
  // unsent (unpaced, it would sit whole in loopback socket buffers by then).
  ASSERT_NO_FATAL_FAILURE(StartSite("blob_cache_fallback", &site, 1 << 20));
  ASSERT_TRUE(
      site.client->Register({"big", "v1", kFixtures + "/big.pt", "lossless"})
          .ok());
  PullOptions grpc_only{"big", "v1", {"lossless"}, site.dir + "/grpc.pt"};
  grpc_only.http_blobs = false;
  auto by_grpc = site.client->Pull(grpc_only);
  ASSERT_TRUE(by_grpc.ok()) << by_grpc.status();
  ASSERT_GT(by_grpc->bytes, uint64_t{4} << 20);

  // 4 MB/s: the blob takes over a second; nginx is stopped 300 ms in.
  PullOptions options{"big", "v1", {"lossless"}, site.dir + "/http.pt"};
  options.max_bytes_per_second = 4e6;
  std::atomic<bool> pulled{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (!pulled.load()) site.nginx->Stop();
  });
  auto result = site.client->Pull(options);
  pulled = true;
  stopper.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->http_fallback);
  EXPECT_EQ(result->http_layers, 0);  // its one layer finished over gRPC
  // Said in the result, not printed by the library.
  ASSERT_EQ(result->warnings.size(), 1u);
  EXPECT_THAT(result->warnings[0], ::testing::HasSubstr("the rest over gRPC"));
  EXPECT_EQ(ReadFileBytes(options.output_path).value(),
            ReadFileBytes(grpc_only.output_path).value());
  // The server's pull counter: a resumed stream (it started past offset 0).
  auto metrics = HttpGet(site.server->metrics_url());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics,
              ::testing::HasSubstr("weightcast_pull_resumes_total 1"));
  if (!HasFailure()) {
    RecordReliability(
        "nginx (the blob cache) stopped 300 ms into a paced HTTP pull of an "
        "8 MB layer",
        "the SDK falls back to the gRPC Pull stream, resuming at the byte "
        "HTTP reached",
        "the pull completes, byte-identical to a gRPC pull");
  }
}

TEST(BlobCacheEndToEnd, BlobTokensMakeBlobGetsCarryTheClientsToken) {
  // No cache in front: the manifest names weightcastd's own blob listener.
  const std::string dir = FreshDir("blob_cache_tokens");
  const std::string token = "device-secret";
  const std::string tokens = dir + "/tokens";
  std::ofstream(tokens) << "device "
                        << DigestToHex(Sha256(absl::MakeConstSpan(
                               reinterpret_cast<const uint8_t*>(token.data()),
                               token.size())))
                        << " app\n";
  const int port = FreeLoopbackPort(), blob_port = FreeLoopbackPort();
  std::vector<std::string> flags = Flags(port, blob_port, blob_port);
  flags.insert(flags.end(), {"--tokens", tokens, "--blob-tokens"});
  // Registering needs an admin token, which this test does not issue: the
  // version is registered by a server without tokens on the same data
  // directory first.
  {
    auto open = ServerProcess::Start(kServer, dir + "/data",
                                     Flags(port, blob_port, blob_port));
    ASSERT_TRUE(open.ok()) << open.status();
    auto client = Client::Connect({absl::StrCat("127.0.0.1:", port)});
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE(
        (*client)->Register({"mlp", "v1", kFixtures + "/mlp.pt", "q27"}).ok());
    ASSERT_TRUE((*client)->Pull({"mlp", "v1", {"q27"}, ""}).ok());  // encodes
  }
  auto server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  ConnectOptions connect{absl::StrCat("127.0.0.1:", port)};
  connect.token = token;
  auto client = Client::Connect(connect);
  ASSERT_TRUE(client.ok()) << client.status();
  auto pulled = (*client)->Pull({"mlp", "v1", {"q27"}, dir + "/mlp.pt"});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_GT(pulled->http_layers, 0);
  EXPECT_FALSE(pulled->http_fallback);
  // Without the token a blob GET is 401 (HttpGet has no Authorization).
  const std::string blobs = dir + "/data/blobs";
  std::string digest;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(blobs)) {
    if (entry.is_regular_file()) digest = entry.path().filename().string();
  }
  ASSERT_EQ(digest.size(), 64u);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(blob_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect_socket(fd, addr), 0);
  const std::string request = absl::StrCat(
      "GET /v1/blobs/", digest, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  ASSERT_EQ(write(fd, request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  char answer[64] = {};
  ASSERT_GT(read(fd, answer, sizeof(answer) - 1), 12);
  close(fd);
  EXPECT_THAT(std::string(answer), ::testing::StartsWith("HTTP/1.1 401 "));
}

}  // namespace
}  // namespace weightcast
