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

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/core/model_store.h"
#include "server/metrics/http_endpoint.h"
#include "server/metrics/metrics.h"
#include "server/rpc/health_service.h"
#include "server/rpc/services.h"
#include "server/rpc/tls.h"

namespace {

constexpr char kUsage[] = R"(usage: weightcastd [options]
  --listen ADDR        gRPC address (default 127.0.0.1:50051; port 0 picks a free one)
  --data-dir DIR       registry (SQLite) and blobs (default ./weightcast-data)
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
  --workers N          encoder threads (default: one per core)
  --cache-bytes N      budget for encoded tiers; least recently used ones are evicted and
                       re-encoded on demand (default 0: unlimited; each version's first tier
                       is pinned)
  --ladder LIST        default tier ladder for new registrations, until SetDefaultLadder
                       (default lossless,q22,q27,q32,q37)
  --preset NAME        x265 preset (default veryfast)
  --max-upload-bytes N largest checkpoint accepted (default 8 GiB)
  --max-tensors N      most tensors one checkpoint may hold (default 65536; at most 8 dimensions each)
  --max-tiers N        most tiers one version may have, its ladder and the refinements added
                       on request together (default 32, at most 256)
  --upload-seconds N   longest a RegisterModel call may take, upload and checks (default 3600)
  --pull-seconds N     longest a Pull stream may take (default 3600; clients resume where
                       they stopped). Past either: DEADLINE_EXCEEDED naming the flag; a client
                       that stopped reading or sending is cancelled min(N, 5) seconds later
  --grace-seconds N    on SIGTERM/SIGINT, how long running streams may finish (default 10)
  --max-streams-per-client N  concurrent Pull, Watch and health Watch streams one client (its
                       token when --tokens is set, else its IP address) may hold (default 256;
                       RESOURCE_EXHAUSTED beyond)
  --keepalive-seconds N  a Watch stream with nothing to say sends a keepalive this often
                       (default 15)
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
reconnect elsewhere or later). Rollouts and device reports are kept in DIR/fleet.db.
)";

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
};

bool Parse(int argc, char** argv, Flags* flags, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        *error = arg + " needs a value";
        return false;
      }
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--listen") {
      if (!value(&flags->listen)) return false;
    } else if (arg == "--metrics") {
      if (!value(&flags->metrics)) return false;
    } else if (arg == "--blob-listen") {
      if (!value(&flags->blob_listen)) return false;
    } else if (arg == "--blob-base-url") {
      if (!value(&flags->blob_base_url)) return false;
      std::string& url = flags->blob_base_url;
      while (!url.empty() && url.back() == '/') url.pop_back();
      const bool scheme =
          url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0;
      const bool plain = std::all_of(url.begin(), url.end(), [](char c) {
        return c > ' ' && c < 127 && c != '?' && c != '#';
      });
      if (!scheme || !plain || url.size() > 1024 ||
          url.find("://") + 3 == url.size()) {
        *error =
            "--blob-base-url needs an http:// or https:// URL (no query, at "
            "most 1024 characters)";
        return false;
      }
    } else if (arg == "--blob-tokens") {
      flags->blob_tokens = true;
    } else if (arg == "--data-dir") {
      if (!value(&flags->store.data_dir)) return false;
    } else if (arg == "--ladder") {
      if (!value(&flags->store.default_ladder)) return false;
    } else if (arg == "--preset") {
      if (!value(&flags->store.x265_preset)) return false;
    } else if (arg == "--workers") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->store.workers) ||
          flags->store.workers < 0) {
        *error = "--workers needs a count";
        return false;
      }
    } else if (arg == "--cache-bytes") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->store.cache_bytes)) {
        *error = "--cache-bytes needs a size";
        return false;
      }
    } else if (arg == "--max-upload-bytes") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->max_upload_bytes)) {
        *error = "--max-upload-bytes needs a size";
        return false;
      }
    } else if (arg == "--tls-cert") {
      if (!value(&flags->tls_cert)) return false;
    } else if (arg == "--tls-key") {
      if (!value(&flags->tls_key)) return false;
    } else if (arg == "--tls-client-ca") {
      if (!value(&flags->tls_client_ca)) return false;
    } else if (arg == "--max-streams-per-client") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->max_streams_per_client) ||
          flags->max_streams_per_client < 1) {
        *error = "--max-streams-per-client needs a count >= 1";
        return false;
      }
    } else if (arg == "--max-tensors") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->store.max_tensors) ||
          flags->store.max_tensors < 1 ||
          flags->store.max_tensors > (1u << 16)) {
        *error = "--max-tensors needs a count within 1..65536";
        return false;
      }
    } else if (arg == "--keepalive-seconds") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->keepalive_seconds) ||
          flags->keepalive_seconds < 1) {
        *error = "--keepalive-seconds needs a count >= 1";
        return false;
      }
    } else if (arg == "--upload-seconds" || arg == "--pull-seconds") {
      int* seconds = arg == "--upload-seconds" ? &flags->upload_seconds
                                               : &flags->pull_seconds;
      if (!value(&v) || !absl::SimpleAtoi(v, seconds) || *seconds < 1) {
        *error = arg + " needs a count >= 1";
        return false;
      }
    } else if (arg == "--no-reflection") {
      flags->reflection = false;
    } else if (arg == "--max-tiers") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->store.max_tiers) ||
          flags->store.max_tiers < 1 ||
          flags->store.max_tiers > weightcast::kMaxLadderTiers) {
        *error = "--max-tiers needs a count within 1..256";
        return false;
      }
    } else if (arg == "--tokens") {
      if (!value(&flags->tokens)) return false;
    } else if (arg == "--grace-seconds") {
      if (!value(&v) || !absl::SimpleAtoi(v, &flags->grace_seconds) ||
          flags->grace_seconds < 0) {
        *error = "--grace-seconds needs a count";
        return false;
      }
    } else {
      *error = "unknown option " + arg;
      return false;
    }
  }
  return true;
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
  Flags flags;
  std::string error;
  if (argc == 3 && std::string(argv[1]) == "--hash-token") {
    std::cout << "device " << weightcast::TokenHash(argv[2]) << "\n";
    return 0;
  }
  if (!Parse(argc, argv, &flags, &error)) {
    std::cerr << "weightcastd: " << error << "\n\n" << kUsage;
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
  auto fleet_registry =
      weightcast::FleetRegistry::Open(flags.store.data_dir + "/fleet.db");
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
  metrics.AddFleetFamilies(
      {[fleet] { return static_cast<double>(fleet->subscribers()); },
       [fleet] { return fleet->DeviceStates(); }});
  weightcast::StreamLimiter limiter(flags.max_streams_per_client,
                                    /*tokens_checked=*/auth != nullptr);
  weightcast::CallDeadlines deadlines;
  const weightcast::RpcLimits limits{flags.max_upload_bytes,
                                     auth.get(),
                                     &limiter,
                                     &deadlines,
                                     absl::Seconds(flags.upload_seconds),
                                     absl::Seconds(flags.pull_seconds)};
  metrics.AddDeadlineCancels(
      [&deadlines] { return static_cast<double>(deadlines.cancelled()); });
  weightcast::AdminService admin(core, fleet, &metrics, limits);
  weightcast::DistributionService distribution(
      core, fleet, &metrics, absl::Seconds(flags.keepalive_seconds), limits,
      flags.blob_base_url);
  weightcast::HealthService health(&limiter);
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
  health.SetServing(true);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  std::cout << "weightcastd listening on " << host << ":" << port << std::endl;

  int signal = 0;
  sigwait(&stop_signals, &signal);
  std::cout << "weightcastd: signal " << signal << ", draining" << std::endl;
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
