// weightcastd on a PostgreSQL registry (--registry): a real PostgreSQL server
// the test starts (tests/testing/postgres_process.h), the real weightcastd
// binary, Debian's nginx. The registry lost under a running server: health
// NOT_SERVING, RPCs UNAVAILABLE naming the registry without its password;
// PostgreSQL back: the same process serves again. Two replicas on one registry
// and one blob directory, nginx in front of B's blob listener: what A
// registers B serves (gRPC and HTTP, same bytes); a rollout started on A
// reaches a device watching B within a second; A killed mid-encode, B takes
// the encoding over and the client (one channel to both) finishes against B.

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/sdk/client.h"
#include "common/base/file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/nginx_process.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/postgres_process.h"
#include "tests/testing/reliability_log.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

std::vector<std::string> Flags(const std::string& registry) {
  return {"--registry", registry,    "--workers",       "2",
          "--preset",   "ultrafast", "--grace-seconds", "1"};
}

// Polls `client`'s health (at most 15 s) until it is `serving`.
bool AwaitHealth(Client& client, bool serving) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<bool> health = client.Health(absl::Seconds(2));
    if (health.ok() && *health == serving) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(PostgresRegistry, ARegistryLostMakesTheServerNotServingUntilItIsBack) {
  auto pg = PostgresProcess::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  ASSERT_TRUE((*pg)->CreateDatabase("weightcast").ok());
  // Trust authentication ignores the password; the server must not show it.
  const std::string url =
      absl::StrCat("postgresql://weightcast:s3cret@127.0.0.1:", (*pg)->port(),
                   "/weightcast");
  const std::string dir = FreshDir("postgres_registry_loss");
  auto server = ServerProcess::Start(kServer, dir + "/data", Flags(url));
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  EXPECT_TRUE(AwaitHealth(*client, true));

  ASSERT_TRUE((*pg)->Stop().ok());
  EXPECT_TRUE(AwaitHealth(*client, false))
      << "still SERVING without PostgreSQL";
  auto listed = client->List();
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(listed.status().message()),
              HasSubstr(absl::StrCat("registry postgresql://weightcast:***@"
                                     "127.0.0.1:",
                                     (*pg)->port(), "/weightcast")));
  EXPECT_THAT(std::string(listed.status().message()), Not(HasSubstr("s3cret")));
  auto describe = client->Describe("mlp", "v1");
  EXPECT_EQ(describe.status().code(), absl::StatusCode::kUnavailable)
      << "answered from memory without its registry";

  ASSERT_TRUE((*pg)->Restart().ok());
  EXPECT_TRUE(AwaitHealth(*client, true)) << "did not recover by itself";
  auto again = client->List();
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].first, "mlp");
  EXPECT_TRUE(client->Describe("mlp", "v1").ok());
  EXPECT_EQ(server->Stop(), 0);
  if (!HasFailure()) {
    RecordReliability(
        "the PostgreSQL registry stopped under a serving weightcastd, then "
        "started again",
        "health NOT_SERVING and every RPC UNAVAILABLE naming the registry "
        "(password shown as ***) while it was down; SERVING again by itself",
        "the registered version, listed and described after the restart");
  }
}

// One replica: its gRPC and blob ports, on the shared registry and directory.
struct Replica {
  int port = 0;
  int blob_port = 0;
  std::optional<ServerProcess> server;
  std::unique_ptr<Client> client;
};

void StartReplica(const std::string& registry, const std::string& shared_dir,
                  int nginx_port, const std::string& preset, Replica* r) {
  r->port = FreeLoopbackPort();
  r->blob_port = FreeLoopbackPort();
  std::vector<std::string> flags = Flags(registry);
  flags[5] = preset;
  for (const std::string& flag :
       {std::string("--listen"), absl::StrCat("127.0.0.1:", r->port),
        std::string("--blob-listen"), absl::StrCat("127.0.0.1:", r->blob_port),
        std::string("--blob-base-url"),
        absl::StrCat("http://127.0.0.1:", nginx_port),
        std::string("--encode-lease-seconds"), std::string("3")}) {
    flags.push_back(flag);
  }
  auto server = ServerProcess::Start(kServer, shared_dir, flags);
  ASSERT_TRUE(server.ok()) << server.status();
  r->server.emplace(*std::move(server));
  r->client = Client::Connect({r->server->address()}).value();
}

// The value of an unlabelled gauge in `metrics_url`'s exposition (-1: absent).
double Gauge(const std::string& metrics_url, const std::string& name) {
  absl::StatusOr<std::string> text = HttpGet(metrics_url);
  if (!text.ok()) return -1;
  const size_t at = text->find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text->c_str() + at + name.size() + 2, nullptr);
}

std::string TierState(Client& client, const std::string& model,
                      const std::string& tier) {
  absl::StatusOr<ModelInfo> info = client.Describe(model, "v1");
  if (!info.ok()) return "";
  for (const TierSummary& t : info->tiers)
    if (t.name == tier) return t.state;
  return "";
}

TEST(Replicas, TwoReplicasOnePostgresOneBlobDirectoryAndNginx) {
  auto pg = PostgresProcess::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  auto url = (*pg)->CreateDatabase("weightcast");
  ASSERT_TRUE(url.ok()) << url.status();
  const std::string dir = FreshDir("replicas_e2e");
  const int nginx_port = FreeLoopbackPort();
  Replica a, b;
  // A codes slowly (so that it can be killed mid-encode), B quickly.
  ASSERT_NO_FATAL_FAILURE(
      StartReplica(*url, dir + "/shared", nginx_port, "veryslow", &a));
  ASSERT_NO_FATAL_FAILURE(
      StartReplica(*url, dir + "/shared", nginx_port, "ultrafast", &b));
  auto nginx = NginxProcess::Start(dir + "/nginx", nginx_port, b.blob_port);
  ASSERT_TRUE(nginx.ok()) << nginx.status();

  // Registered through A; pulled through B over gRPC and through nginx.
  ASSERT_TRUE(
      a.client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"})
          .ok());
  PullOptions by_grpc{"mlp", "v1", {"lossless"}, dir + "/b-grpc.pt"};
  by_grpc.http_blobs = false;
  auto pulled = b.client->Pull(by_grpc);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  PullOptions by_http{"mlp", "v1", {"lossless"}, dir + "/b-http.pt"};
  auto fetched = b.client->Pull(by_http);
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_GT(fetched->http_layers, 0);
  EXPECT_FALSE(fetched->http_fallback);
  EXPECT_EQ(ReadFileBytes(by_http.output_path).value(),
            ReadFileBytes(by_grpc.output_path).value());
  EXPECT_GT(nginx->ReadLog().origin_requests, 0);

  // A rollout started on A reaches a device watching B within a second.
  std::mutex mu;
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>>
      assignments;
  std::atomic<bool> stop_watch{false};
  std::thread watcher([&] {
    WatchOptions watch{"device-1", {}, {"mlp"},
                       "",         {}, [&] {
                         return stop_watch.load(); }};
    b.client
        ->Watch(watch,
                [&](const AssignmentInfo& info) {
                  std::lock_guard<std::mutex> lock(mu);
                  assignments.emplace_back(info.version,
                                           std::chrono::steady_clock::now());
                })
        .IgnoreError();
  });
  for (int i = 0; i < 100 && Gauge(b.server->metrics_url(),
                                   "weightcast_watch_subscribers") < 1;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(Gauge(b.server->metrics_url(), "weightcast_watch_subscribers"), 1);
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(a.client->StartRollout("mlp", "v1", 100, {}).ok());
  std::optional<std::chrono::steady_clock::time_point> heard;
  for (int i = 0; i < 100 && !heard; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& [version, when] : assignments)
        if (version == "v1") heard = when;
    }
    if (!heard) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop_watch.store(true);
  watcher.join();
  ASSERT_TRUE(heard.has_value()) << "the rollout never reached B's watcher";
  const double seconds =
      std::chrono::duration<double>(*heard - started).count();
  EXPECT_LT(seconds, 1.0);
  std::cout << "rollout on A reached B's watcher in " << seconds << " s\n";

  // A killed mid-pull: a client with one channel to both replicas (A first,
  // pick-first) resumes against B from where A's stream stopped. The tier is
  // ~8 MB, read at 1 MB/s: far more than socket buffers and gRPC's window
  // hold when A dies half a megabyte in.
  {
    ASSERT_TRUE(
        a.client->Register({"big", "v1", kFixtures + "/big.pt", "lossless"})
            .ok());
    PullOptions whole{"big", "v1", {"lossless"}, dir + "/big-b.pt"};
    whole.http_blobs = false;
    ASSERT_TRUE(b.client->Pull(whole).ok());  // encoded, and the reference
    auto both = Client::Connect({absl::StrCat("ipv4:127.0.0.1:", a.port,
                                              ",127.0.0.1:", b.port)})
                    .value();
    PullOptions paced{"big", "v1", {"lossless"}, dir + "/big-resumed.pt"};
    paced.http_blobs = false;
    paced.max_bytes_per_second = 1e6;
    bool killed = false;
    uint64_t killed_at = 0;
    paced.progress = [&](const PullProgress& progress) {
      if (!killed && progress.bytes_received >= (512 << 10) &&
          progress.bytes_received < progress.total_bytes) {
        killed = true;
        killed_at = progress.bytes_received;
        a.server->Kill();
      }
    };
    auto result = both->Pull(paced);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_TRUE(killed) << "the pull ended before A could be killed";
    EXPECT_GE(result->reconnects, 1);
    EXPECT_EQ(ReadFileBytes(paced.output_path).value(),
              ReadFileBytes(whole.output_path).value());
    std::cout << "A killed " << killed_at << " bytes into a pull of "
              << result->bytes << ": finished against B after "
              << result->reconnects << " reconnect(s)\n";
    // A back, for what follows.
    ASSERT_NO_FATAL_FAILURE(
        StartReplica(*url, dir + "/shared", nginx_port, "veryslow", &a));
  }

  // A killed mid-encode: a client with one channel to both replicas (A
  // first) finishes its pull against B, which takes A's lease over.
  ASSERT_TRUE(
      a.client->Register({"cnn", "v1", kFixtures + "/cnn_bn.pt", "q27"}).ok());
  auto both = Client::Connect({absl::StrCat("ipv4:127.0.0.1:", a.port,
                                            ",127.0.0.1:", b.port)})
                  .value();
  PullOptions resumed{"cnn", "v1", {"q27"}, dir + "/cnn-resumed.pt"};
  absl::StatusOr<PullResult> resumed_result = absl::UnknownError("not run");
  std::thread puller([&] { resumed_result = both->Pull(resumed); });
  std::string state;
  for (int i = 0; i < 500 && state != "ENCODING"; ++i) {
    state = TierState(*b.client, "cnn", "q27");
    if (state != "ENCODING")
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(state, "ENCODING") << "A never started encoding";
  a.server->Kill();
  const auto killed = std::chrono::steady_clock::now();
  puller.join();
  ASSERT_TRUE(resumed_result.ok()) << resumed_result.status();
  std::cout << "B finished A's encode and the pull "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                             killed)
                   .count()
            << " s after A's SIGKILL\n";
  EXPECT_EQ(TierState(*b.client, "cnn", "q27"), "READY");
  // B encoded the tier (A, killed, never finished it).
  const absl::StatusOr<std::string> b_metrics =
      HttpGet(b.server->metrics_url());
  ASSERT_TRUE(b_metrics.ok());
  EXPECT_THAT(*b_metrics,
              HasSubstr("weightcast_layers_encoded_total{tier=\"q27\"}"));
  PullOptions again{"cnn", "v1", {"q27"}, dir + "/cnn-http.pt"};
  auto again_result = b.client->Pull(again);
  ASSERT_TRUE(again_result.ok()) << again_result.status();
  EXPECT_EQ(ReadFileBytes(again.output_path).value(),
            ReadFileBytes(resumed.output_path).value());

  // PostgreSQL restarted: B recovers by itself.
  ASSERT_TRUE((*pg)->Restart().ok());
  EXPECT_TRUE(AwaitHealth(*b.client, true));
  auto listed = b.client->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), 3u);  // mlp, big, cnn
  EXPECT_EQ(b.server->Stop(), 0);
  if (!HasFailure()) {
    RecordReliability(
        "replica A SIGKILLed 512 KiB into a pull (one client channel to A "
        "and B)",
        "the pull resumed against replica B (1 reconnect)",
        "the pulled file byte-identical to B's own pull");
    RecordReliability(
        "replica A SIGKILLed while it held a tier's encode lease",
        "replica B took the lease over after its timeout, encoded the tier "
        "and the waiting pull finished",
        "the tier READY once, the same bytes on a second pull");
    RecordReliability("PostgreSQL restarted under two replicas",
                      "replica B served again without a restart",
                      "every registered model listed");
  }
}

}  // namespace
}  // namespace weightcast
