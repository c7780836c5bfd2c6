// weightcastd: flags and lifecycle only. The work is in core/ (ModelStore) and
// rpc/ (services).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/base/allocator.h"
#include "common/base/args.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"
#include "common/pack/rate_allocation.h"
#include "server/core/model_store.h"
#include "server/metrics/http_endpoint.h"
#include "server/metrics/metrics.h"
#include "server/rpc/health_service.h"
#include "server/rpc/services.h"
#include "server/rpc/tls.h"
#include "server/storage/database.h"

namespace {

constexpr char kUsage[] = R"(usage: weightcastd [options]
  --listen ADDR        gRPC address (default 127.0.0.1:50051; port 0 picks a free one)
  --data-dir DIR       registry (SQLite) and blobs (default ./weightcast-data)
  --registry URL       keep the registry and the fleet's rollouts and device reports in
                       PostgreSQL at URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB) instead
                       of SQLite in DIR (the default). Several replicas may share one URL and
                       one blob directory (docs/OPERATIONS.md); the password never appears in
                       logs or errors (prefer PGPASSWORD or ~/.pgpass to a password in the URL)
  --encode-lease-seconds N  with --registry: a replica encoding a tier holds a lease on it,
                       renewed every N/3 s; one that dies is taken over by another replica
                       N s after its last renewal (default 30, 3..3600)
  --metrics ADDR       Prometheus /metrics over HTTP (default 127.0.0.1:9464; "" turns it off)
  --blob-listen ADDR   serve the stored layer blobs over HTTP at GET|HEAD /v1/blobs/<sha256>
                       (Range, ETag = the digest, Cache-Control immutable; for nginx or a CDN
                       in front). Its own listener, not --metrics: blobs face clients, metrics
                       the scraper (default "": off)
  --blob-base-url URL  put URL (http:// or https://, e.g. the nginx in front of --blob-listen)
                       in every manifest: the SDK then GETs URL/v1/blobs/<sha256> and uses
                       gRPC for control, falling back to the Pull stream (default "": none)
  --blob-tokens        with --tokens: blob GETs need "Authorization: Bearer TOKEN" of either
                       role too (default: a blob's digest, which only a manifest tells, is
                       enough; see docs/OPERATIONS.md)
  --workers N          encoder threads (default 0: one per core; at most 1024)
  --cache-bytes N      budget for encoded tiers; least recently used ones are evicted and
                       re-encoded on demand (default 0: unlimited; each version's first tier
                       is pinned)
  --cache-min-idle-seconds N  a tier handed out (by any replica) less than N s ago is not
                       evicted, even over the budget (default 600 with --registry, where a
                       replica cannot see another's pulls; 0 without; at most 604800)
  --ladder LIST        default tier ladder for new registrations, until SetDefaultLadder
                       (default lossless,q22,q27,q32,q37)
  --no-encode-on-register  do not start encoding a version's ladder when it is registered
                       (by default every ladder tier is encoded in the background at once,
                       behind the encodings pulls wait for, so selections by bytes, SQNR,
                       accuracy or link speed find sizes; --encode-on-register: the default,
                       and it wins over --no-encode-on-register)
  --preset NAME        x265 preset (default veryfast)
  --rate-qps LIST      the QPs budget and accuracy tiers code each picture layer at to measure
                       its rate curve (2 to 51 distinct QPs in 1..51; default
                       $RATE_QPS):
                       fewer points encode faster and fit a budget less closely
  --no-column-weighting  accuracy tiers (acc-X, cos-C) search plain codings only (by default
                       they also search with the layers worth weighing coded with column
                       scales from their inputs' RMS on the bundle, and keep what is smaller;
                       such layers are coded from the whole tensor, and the search runs
                       about twice as many evaluations)
  --max-upload-bytes N largest checkpoint accepted (default 8 GiB)
  --max-tensors N      most tensors one checkpoint may hold (default 65536; at most 8 dimensions each)
  --max-tiers N        most tiers one version may have, its ladder and the refinements added
                       on request together (default 32, at most 256)
  --upload-seconds N   longest a RegisterModel call may take, upload and checks (default 3600,
                       at most 604800: a week)
  --pull-seconds N     longest a Pull stream may take (default 3600, at most 604800; clients resume where
                       they stopped). Past either: DEADLINE_EXCEEDED naming the flag; a client
                       that stopped reading or sending is cancelled min(N, 5) seconds later
  --grace-seconds N    on SIGTERM/SIGINT, how long running streams may finish (default 10;
                       at most 86400)
  --max-streams-per-client N  concurrent Pull, Watch and health Watch streams one client (its
                       token when --tokens is set, else its IP address) may hold (default 256,
                       at most 2^20; RESOURCE_EXHAUSTED beyond)
  --keepalive-seconds N  a Watch stream with nothing to say sends a keepalive this often
                       (default 15, at most 86400)
  --tls-cert FILE      serve gRPC over TLS with this PEM certificate chain...
  --tls-key FILE       ...and this PEM private key
  --tls-client-ca FILE require client certificates signed by this CA (mutual TLS)
  --tokens FILE        require bearer tokens: lines "admin|device SHA256-HEX [name]
                       [devices=ID,PREFIX*,...]"; admin tokens may call everything, device
                       tokens pulls, manifests, list and describe, and watches and status
                       reports as the devices listed (UNAUTHENTICATED / PERMISSION_DENIED);
                       health and reflection need no token
  --no-reflection      do not serve gRPC server reflection (it lists the services and
                       messages to anyone who connects)
  --hash-token TOKEN   print the tokens-file line of TOKEN (as a device token) and exit
  -h, --help           this text
Prints "weightcastd listening on ADDR" once serving. SIGTERM drains: health NOT_SERVING, new
pulls UNAVAILABLE, running streams get the grace period, Watch streams end (UNAVAILABLE: devices
reconnect elsewhere or later), a running encode stops at its next tile (encoded again on
demand). Rollouts and device reports are kept in DIR/fleet.db (with --registry: in PostgreSQL).
)";

// The usage text with the defaults the code holds filled in.
std::string Usage() {
  return absl::StrReplaceAll(
      kUsage, {{"$RATE_QPS", absl::StrJoin(weightcast::BudgetQpGrid(), ",")}});
}

struct Flags {
  std::string listen = "127.0.0.1:50051";
  std::string metrics = "127.0.0.1:9464";
  std::string blob_listen;
  std::string blob_base_url;
  bool blob_tokens = false;
  weightcast::ModelStoreOptions store{"weightcast-data"};
  uint64_t max_upload_bytes = weightcast::kDefaultMaxUploadBytes;
  int grace_seconds = 10;
  int keepalive_seconds = 15;
  int max_streams_per_client = 256;
  int upload_seconds = 3600;
  int pull_seconds = 3600;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string tokens;
  bool reflection = true;
  bool encode_on_register = true;
};

absl::Status Parse(int argc, char** argv, Flags* flags) {
  using weightcast::Args;
  using weightcast::ArgSpec;
  const ArgSpec spec{
      {"--listen",
       "--metrics",
       "--data-dir",
       "--ladder",
       "--preset",
       "--workers",
       "--cache-bytes",
       "--cache-min-idle-seconds",
       "--max-upload-bytes",
       "--tls-cert",
       "--tls-key",
       "--tls-client-ca",
       "--max-streams-per-client",
       "--max-tensors",
       "--keepalive-seconds",
       "--upload-seconds",
       "--pull-seconds",
       "--max-tiers",
       "--tokens",
       "--grace-seconds",
       "--blob-listen",
       "--blob-base-url",
       "--registry",
       "--encode-lease-seconds",
       "--rate-qps"},
      {"-h", "--help", "--no-reflection", "--no-encode-on-register",
       "--encode-on-register", "--blob-tokens", "--no-column-weighting"}};
  ASSIGN_OR_RETURN(const Args args,
                   Args::Parse(Args::FromArgv(argc, argv), spec));
  if (args.Has("-h") || args.Has("--help")) {
    std::cout << Usage();
    std::exit(0);
  }
  if (!args.positional().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument ", weightcast::Echo(args.positional()[0])));
  }
  weightcast::ModelStoreOptions& store = flags->store;
  flags->listen = args.Get("--listen", flags->listen);
  flags->metrics = args.Get("--metrics", flags->metrics);
  store.data_dir = args.Get("--data-dir", store.data_dir);
  store.registry = args.Get("--registry");
  if (!store.registry.empty() &&
      !weightcast::Database::IsPostgresUrl(store.registry)) {
    return absl::InvalidArgumentError(
        "--registry takes a postgresql:// URL (the default, SQLite in "
        "--data-dir, needs no flag)");
  }
  store.default_ladder = args.Get("--ladder", store.default_ladder);
  store.x265_preset = args.Get("--preset", store.x265_preset);
  store.column_weighting = !args.Has("--no-column-weighting");
  if (args.Has("--rate-qps")) {
    auto qps = weightcast::ParseRateQps(args.Get("--rate-qps"));
    if (!qps.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--rate-qps: ", qps.status().message()));
    }
    store.rate_qps = *std::move(qps);
  }
  flags->tls_cert = args.Get("--tls-cert");
  flags->tls_key = args.Get("--tls-key");
  flags->tls_client_ca = args.Get("--tls-client-ca");
  flags->tokens = args.Get("--tokens");
  flags->reflection = !args.Has("--no-reflection");
  flags->blob_listen = args.Get("--blob-listen");
  flags->blob_tokens = args.Has("--blob-tokens");
  if (args.Has("--blob-base-url")) {
    std::string url = args.Get("--blob-base-url");
    while (!url.empty() && url.back() == '/') url.pop_back();
    const bool scheme =
        url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
    const bool plain = std::all_of(url.begin(), url.end(), [](char c) {
      return c > ' ' && c < 127 && c != '?' && c != '#';
    });
    if (!scheme || !plain || url.size() > 1024 ||
        url.find("://") + 3 == url.size()) {
      return absl::InvalidArgumentError(
          "--blob-base-url needs an http:// or https:// URL (no query, at "
          "most 1024 characters)");
    }
    flags->blob_base_url = url;
  }
  flags->encode_on_register =
      !args.Has("--no-encode-on-register") || args.Has("--encode-on-register");
  constexpr uint64_t kAnySize = ~uint64_t{0};
  RETURN_IF_ERROR(args.Int("--workers", 0, 1024, &store.workers));
  RETURN_IF_ERROR(
      args.Int("--cache-bytes", uint64_t{0}, kAnySize, &store.cache_bytes));
  RETURN_IF_ERROR(args.Int("--max-upload-bytes", uint64_t{1}, kAnySize,
                           &flags->max_upload_bytes));
  RETURN_IF_ERROR(args.Int("--max-streams-per-client", 1, 1 << 20,
                           &flags->max_streams_per_client));
  RETURN_IF_ERROR(args.Int("--max-tensors", uint64_t{1}, uint64_t{1} << 16,
                           &store.max_tensors));
  RETURN_IF_ERROR(
      args.Int("--keepalive-seconds", 1, 86400, &flags->keepalive_seconds));
  RETURN_IF_ERROR(
      args.Int("--upload-seconds", 1, 86400 * 7, &flags->upload_seconds));
  RETURN_IF_ERROR(
      args.Int("--pull-seconds", 1, 86400 * 7, &flags->pull_seconds));
  RETURN_IF_ERROR(args.Int("--max-tiers", uint64_t{1},
                           uint64_t{weightcast::kMaxLadderTiers},
                           &store.max_tiers));
  RETURN_IF_ERROR(args.Int("--grace-seconds", 0, 86400, &flags->grace_seconds));
  int min_idle_seconds = store.registry.empty() ? 0 : 600;
  RETURN_IF_ERROR(
      args.Int("--cache-min-idle-seconds", 0, 86400 * 7, &min_idle_seconds));
  store.evict_min_idle = absl::Seconds(min_idle_seconds);
  int lease_seconds = 30;
  RETURN_IF_ERROR(args.Int("--encode-lease-seconds", 3, 3600, &lease_seconds));
  store.encode_lease = absl::Seconds(lease_seconds);
  return absl::OkStatus();
}

// Linking gRPC's reflection library registers its plugin with every
// ServerBuilder; this option takes it out again (--no-reflection).
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const auto& plugin) {
                                    return plugin->name() ==
                                           "proto_server_reflection";
                                  }),
                   plugins->end());
  }
};

}  // namespace

int main(int argc, char** argv) {
  weightcast::MapLargeAllocations();
  Flags flags;
  if (argc == 3 && std::string(argv[1]) == "--hash-token") {
    std::cout << "device " << weightcast::TokenHash(argv[2]) << "\n";
    return 0;
  }
  if (absl::Status parsed = Parse(argc, argv, &flags); !parsed.ok()) {
    std::cerr << "weightcastd: " << parsed.message() << "\n\n" << Usage();
    return 2;
  }
  std::unique_ptr<weightcast::TokenAuth> auth;
  if (!flags.tokens.empty()) {
    auto loaded = weightcast::TokenAuth::Load(flags.tokens);
    if (!loaded.ok()) {
      std::cerr << "weightcastd: " << loaded.status().message() << "\n";
      return 2;
    }
    auth = *std::move(loaded);
  }
  if (flags.blob_tokens && auth == nullptr) {
    std::cerr << "weightcastd: --blob-tokens needs --tokens\n";
    return 2;
  }
  // A file that hits a size limit fails its write (EFBIG -> RESOURCE_EXHAUSTED)
  // instead of killing the server.
  signal(SIGXFSZ, SIG_IGN);
  // Block the stop signals in every thread; main waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  weightcast::ServerMetrics metrics;
  flags.store.metrics = &metrics;
  auto store = weightcast::ModelStore::Create(flags.store);
  if (!store.ok()) {
    std::cerr << "weightcastd: " << store.status().message() << "\n";
    return 1;
  }
  weightcast::ModelStore* core = store->get();
  metrics.AddEncoderFamilies(
      {[core] { return static_cast<double>(core->pool().queued()); },
       [core] { return static_cast<double>(core->pool().busy()); },
       [core] { return static_cast<double>(core->pool().workers()); },
       [core] {
         auto bytes = core->EncodedBytes();
         return bytes.ok() ? static_cast<double>(*bytes) : 0.0;
       }});
  metrics.AddDataDirFamilies(flags.store.data_dir);
  std::unique_ptr<weightcast::HttpEndpoint> endpoint;
  if (!flags.metrics.empty()) {
    auto started = weightcast::HttpEndpoint::Start(
        flags.metrics,
        {.metrics = [&metrics] { return metrics.Exposition(); }});
    if (!started.ok()) {
      std::cerr << "weightcastd: " << started.status().message() << "\n";
      return 1;
    }
    endpoint = *std::move(started);
    const std::string host = flags.metrics.substr(0, flags.metrics.rfind(':'));
    std::cout << "weightcastd metrics on http://" << host << ":"
              << endpoint->port() << "/metrics" << std::endl;
  }
  std::unique_ptr<weightcast::HttpEndpoint> blob_endpoint;
  if (!flags.blob_listen.empty()) {
    weightcast::HttpRoutes routes{.blobs = &core->blobs()};
    routes.on_blob_answer = [&metrics](int status, uint64_t body_bytes) {
      metrics.RecordBlobAnswer(status, body_bytes);
    };
    if (flags.blob_tokens) {
      const weightcast::TokenAuth* tokens = auth.get();
      routes.blob_reader = [tokens](const std::string& authorization) {
        return tokens->Knows(authorization);
      };
    }
    auto started =
        weightcast::HttpEndpoint::Start(flags.blob_listen, std::move(routes));
    if (!started.ok()) {
      std::cerr << "weightcastd: " << started.status().message() << "\n";
      return 1;
    }
    blob_endpoint = *std::move(started);
    const std::string host =
        flags.blob_listen.substr(0, flags.blob_listen.rfind(':'));
    std::cout << "weightcastd blobs on http://" << host << ":"
              << blob_endpoint->port() << "/v1/blobs/" << std::endl;
  }
  auto fleet_registry = weightcast::FleetRegistry::Open(
      flags.store.registry.empty() ? flags.store.data_dir + "/fleet.db"
                                   : flags.store.registry);
  absl::StatusOr<std::unique_ptr<weightcast::Fleet>> fleet_or =
      fleet_registry.ok()
          ? weightcast::Fleet::Create(
                fleet_registry->get(),
                [core](const std::string& model, const std::string& version) {
                  return core->Describe(model, version).status();
                })
          : fleet_registry.status();
  if (!fleet_or.ok()) {
    std::cerr << "weightcastd: fleet: " << fleet_or.status().message() << "\n";
    return 1;
  }
  weightcast::Fleet* fleet = fleet_or->get();
  // Replicas sharing a PostgreSQL registry: rollouts another replica changes
  // reach this one's watchers at once (LISTEN/NOTIFY; null with SQLite).
  auto rollout_listener =
      (*fleet_registry)->ListenForRollouts([fleet](const std::string& model) {
        fleet->Refresh(model).IgnoreError();
      });
  if (!rollout_listener.ok()) {
    std::cerr << "weightcastd: fleet: " << rollout_listener.status().message()
              << "\n";
    return 1;
  }
  metrics.AddFleetFamilies(
      {[fleet] { return static_cast<double>(fleet->subscribers()); },
       [fleet] { return fleet->DeviceStates(); }});
  weightcast::StreamLimiter limiter(flags.max_streams_per_client,
                                    /*tokens_checked=*/auth != nullptr);
  weightcast::CallDeadlines deadlines;
  weightcast::HealthService health(&limiter);
  // A shared registry can go away under a running server: while it does,
  // health says NOT_SERVING and RPCs are refused
  // (server/rpc/registry_monitor.h).
  weightcast::FleetRegistry* fleet_db = fleet_registry->get();
  std::unique_ptr<weightcast::RegistryMonitor> registry_monitor;
  if (core->shared_registry()) {
    registry_monitor = std::make_unique<weightcast::RegistryMonitor>(
        [core, fleet_db]() -> absl::Status {
          RETURN_IF_ERROR(core->PingRegistry());
          return fleet_db->Ping();
        },
        &health, absl::Seconds(1));
  }
  const weightcast::RpcLimits limits{flags.max_upload_bytes,
                                     auth.get(),
                                     &limiter,
                                     &deadlines,
                                     absl::Seconds(flags.upload_seconds),
                                     absl::Seconds(flags.pull_seconds),
                                     flags.encode_on_register,
                                     registry_monitor.get()};
  metrics.AddDeadlineCancels(
      [&deadlines] { return static_cast<double>(deadlines.cancelled()); });
  weightcast::AdminService admin(core, fleet, &metrics, limits);
  weightcast::DistributionService distribution(
      core, fleet, &metrics, absl::Seconds(flags.keepalive_seconds), limits,
      flags.blob_base_url);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  auto credentials = weightcast::ServerCredentialsFromFiles(
      flags.tls_cert, flags.tls_key, flags.tls_client_ca);
  if (!credentials.ok()) {
    std::cerr << "weightcastd: " << credentials.status().message() << "\n";
    return 2;
  }
  if (!flags.reflection)
    builder.SetOption(std::make_unique<WithoutReflection>());
  builder.AddListeningPort(flags.listen, *credentials, &port);
  builder.RegisterService(&admin);
  builder.RegisterService(&distribution);
  builder.RegisterService(&health);
  builder.SetMaxReceiveMessageSize(8 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "weightcastd: cannot listen on " << flags.listen << "\n";
    return 1;
  }
  if (registry_monitor != nullptr) {
    registry_monitor->Start();  // SERVING once the registry answers
  } else {
    health.SetServing(true);
  }
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  std::cout << "weightcastd listening on " << host << ":" << port << std::endl;

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::cout << "weightcastd: signal " << signal << ", draining" << std::endl;
  if (registry_monitor != nullptr) registry_monitor->Stop();
  health.SetServing(false);
  distribution.Drain();
  fleet->Shutdown();  // Watch streams end now rather than at the grace deadline
  health.Shutdown();  // and health Watch streams, having seen NOT_SERVING
  (*store)->Shutdown();  // waiting pulls get UNAVAILABLE
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(flags.grace_seconds));
  server->Wait();
  blob_endpoint.reset();
  endpoint.reset();
  std::cout << "weightcastd: stopped" << std::endl;
  return 0;
}
