// Blobs for many readers (issue 20): 50 concurrent clients fetching a cached
// ~21 MB tier (6 layers) from the real weightcastd on 127.0.0.1, three ways, in
// one run:
//   A. the baseline: each client drains a Distribution.Pull stream straight
//      from weightcastd (gRPC);
//   B. each client asks for the manifest over gRPC and GETs the layers'
//      blobs over HTTP through a real nginx proxy_cache in front of
//      weightcastd --blob-listen (first round with nginx's cache cold, then
//      warm);
//   C. the same GETs straight from weightcastd's blob listener (no cache).
// Every client checks each layer's SHA-256 (what the SDK does before
// decoding); no decoding, so the figures are the data path's. Reported:
// aggregate throughput (bytes all clients received / wall time) and, from
// nginx's access log, the requests that reached weightcastd per blob.
// usage: blob_cache_benchmark WEIGHTCASTD WORK_DIR [CLIENTS]
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/gaussian_checkpoint.h"
#include "bench/register.h"
#include "client/sdk/http_blobs.h"
#include "common/base/sha256.h"
#include "common/checkpoint/safetensors.h"
#include "common/tensor/tensor.h"
#include "tests/e2e/nginx_process.h"
#include "tests/e2e/server_process.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  static std::atomic<int> channels{0};
  // Distinct arguments: each client its own connection, not a shared
  // subchannel.
  args.SetInt("weightcast.bench.channel", channels.fetch_add(1));
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

// A failed fetch ends the benchmark, naming what failed.
[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "blob_cache_benchmark: %s\n", what.c_str());
  std::exit(1);
}

bool Matches(const std::string& bytes, const std::string& sha256) {
  const Sha256Digest digest = Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  return std::string(digest.begin(), digest.end()) == sha256;
}

// A: drains one Pull stream, checking each layer; the bytes received.
uint64_t PullOverGrpc(const std::string& address) {
  auto stub = v1::Distribution::NewStub(Channel(address));
  grpc::ClientContext context;
  v1::PullRequest request;
  request.set_model("big");
  request.set_version("v1");
  request.mutable_tier()->set_name("lossless");
  auto reader = stub->Pull(&context, request);
  v1::PullResponse response;
  v1::Manifest manifest;
  std::string layer;
  uint64_t bytes = 0;
  while (reader->Read(&response)) {
    if (response.has_manifest()) {
      manifest = response.manifest();
      continue;
    }
    layer += response.chunk().data();
    const v1::ManifestLayer& expected =
        manifest.layers(static_cast<int>(response.chunk().layer()));
    if (layer.size() == expected.bytes()) {
      if (!Matches(layer, expected.blob_sha256()))
        Fail("a layer over gRPC does not match its SHA-256");
      bytes += layer.size();
      layer.clear();
    }
  }
  if (const grpc::Status status = reader->Finish(); !status.ok())
    Fail("Pull: " + status.error_message());
  return bytes;
}

// B and C: the manifest over gRPC, the blobs over HTTP from `base_url`.
uint64_t PullOverHttp(const std::string& address, const std::string& base_url) {
  auto stub = v1::Distribution::NewStub(Channel(address));
  grpc::ClientContext context;
  v1::GetManifestRequest request;
  request.set_model("big");
  request.set_version("v1");
  request.mutable_tier()->set_name("lossless");
  v1::Manifest manifest;
  if (const grpc::Status status =
          stub->GetManifest(&context, request, &manifest);
      !status.ok())
    Fail("GetManifest: " + status.error_message());
  HttpBlobsOptions options;
  options.base_url = base_url;
  HttpBlobs http(options);
  uint64_t bytes = 0;
  for (const v1::ManifestLayer& layer : manifest.layers()) {
    std::string blob;
    if (const absl::Status fetched =
            http.Fetch(layer.blob_sha256(), layer.bytes(), &blob);
        !fetched.ok())
      Fail(std::string(fetched.message()));
    bytes += blob.size();
  }
  return bytes;
}

// CPU seconds (user + system) `pid` has used so far: the origin's cost.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / sysconf(_SC_CLK_TCK);
}

// `clients` threads at once; the MB/s of all their bytes over the wall time.
template <typename Fetch>
double Concurrent(int clients, Fetch fetch, double* seconds) {
  std::atomic<uint64_t> received{0};
  std::vector<std::thread> threads;
  const auto start = SteadyClock::now();
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&] { received += fetch(); });
  for (std::thread& t : threads) t.join();
  *seconds = Seconds(start);
  return received / 1e6 / *seconds;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  using namespace weightcast;
  int clients = 50;
  if (argc < 3 || (argc > 3 && !absl::SimpleAtoi(argv[3], &clients)) ||
      clients < 1 || clients > 1000) {
    std::fprintf(
        stderr, "usage: blob_cache_benchmark WEIGHTCASTD WORK_DIR [CLIENTS]\n");
    return 2;
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);  // each row as soon as it is measured
  const std::string server_binary = argv[1], work = argv[2];
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  const std::string checkpoint =
      WriteCheckpoint(work + "/big.safetensors", 6, 2048, 2048);
  const int blob_port = FreeLoopbackPort(), nginx_port = FreeLoopbackPort();
  auto server = ServerProcess::Start(
      server_binary, work + "/data",
      {"--workers", "2", "--blob-listen", absl::StrCat("127.0.0.1:", blob_port),
       "--blob-base-url", absl::StrCat("http://127.0.0.1:", nginx_port)});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  auto nginx = NginxProcess::Start(work + "/nginx", nginx_port, blob_port);
  if (!nginx.ok()) {
    std::fprintf(stderr, "%s\n", nginx.status().ToString().c_str());
    return 1;
  }
  RegisterOrExit(server->address(), "big", checkpoint, "lossless");
  const uint64_t tier_bytes = PullOverGrpc(server->address());  // encodes it
  const std::string origin = absl::StrCat("http://127.0.0.1:", blob_port);
  const int blobs = 6;

  std::printf(
      "%d concurrent clients, a cached %.1f MB tier (%d layers), "
      "each layer's SHA-256 checked, no decoding\n\n",
      clients, tier_bytes / 1e6, blobs);
  std::printf(
      "| path | wall s | aggregate MB/s | weightcastd CPU s | nginx CPU s | "
      "requests to weightcastd |\n");
  std::printf("|---|---|---|---|---|---|\n");
  double seconds = 0;
  const pid_t pid = server->pid();
  double cpu = CpuSeconds(pid);
  // The origin's CPU seconds since the last call.
  auto origin_cpu = [&] {
    const double now = CpuSeconds(pid);
    const double used = now - cpu;
    cpu = now;
    return used;
  };
  double nginx_cpu = CpuSeconds(nginx->pid());
  auto cache_cpu = [&] {  // nginx's CPU seconds since the last call
    const double now = CpuSeconds(nginx->pid());
    const double used = now - nginx_cpu;
    nginx_cpu = now;
    return used;
  };
  // B cold first (the cache is empty only once), then the others interleaved.
  double rate = Concurrent(
      clients, [&] { return PullOverHttp(server->address(), nginx->url()); },
      &seconds);
  NginxProcess::LogCounts log = nginx->ReadLog();
  std::printf(
      "| B. HTTP through nginx, cache cold | %.2f | %.0f | %.2f | %.2f | %d "
      "for %d "
      "blobs (%.2f per blob; nginx answered %d GETs) + %d GetManifest |\n",
      seconds, rate, origin_cpu(), cache_cpu(), log.origin_requests, log.blobs,
      static_cast<double>(log.origin_requests) / log.blobs, log.requests,
      clients);
  for (int round = 1; round <= 2; ++round) {
    rate = Concurrent(
        clients, [&] { return PullOverGrpc(server->address()); }, &seconds);
    std::printf(
        "| A. gRPC Pull stream from weightcastd (round %d) | %.2f | %.0f | "
        "%.2f | %.2f | %d Pull streams |\n",
        round, seconds, rate, origin_cpu(), cache_cpu(), clients);
    const int origin_before = nginx->ReadLog().origin_requests;
    rate = Concurrent(
        clients, [&] { return PullOverHttp(server->address(), nginx->url()); },
        &seconds);
    log = nginx->ReadLog();
    std::printf(
        "| B. HTTP through nginx, cache warm (round %d) | %.2f | %.0f | %.2f | "
        "%.2f | %d blob GETs + %d GetManifest |\n",
        round, seconds, rate, origin_cpu(), cache_cpu(),
        log.origin_requests - origin_before, clients);
    rate = Concurrent(
        clients, [&] { return PullOverHttp(server->address(), origin); },
        &seconds);
    std::printf(
        "| C. HTTP straight from weightcastd --blob-listen (round %d) | %.2f | "
        "%.0f | %.2f | %.2f | %d blob GETs + %d GetManifest |\n",
        round, seconds, rate, origin_cpu(), cache_cpu(), clients * blobs,
        clients);
  }
  nginx->Stop();
  return 0;
}
