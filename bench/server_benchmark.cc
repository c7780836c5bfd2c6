// Server benchmarks, each against its baseline in the same run, on 127.0.0.1
// with the real weightcastd (started by this program):
//   1. streaming a cached 20 MB tier, against a bare gRPC stream of the same
//   bytes (the same
//      Distribution.Pull messages, served from memory by a minimal in-process
//      service);
//   2. encode throughput with 2 workers against 1 (a cold q27 tier of 4 layers
//   of 1024x1024);
//   3. 100 concurrent pulls of the 20 MB tier: the server's peak RSS while they
//   run, against
//      its RSS when idle with the tier cached;
//   4. the SDK's pipelined pull (decode while downloading; tiles decoded as
//      they arrive, and once their layer is whole) against
//      download-then-decode, over a link paced to 16 MB/s, on a 24 M-weight
//      q22 tier; and on a tier of larger layers, with one decode job per
//      layer against one per tile;
//   5. the SDK's decode throughput (unpaced loopback pull, no output): one job
//      per layer against one per tile, on layers of 4, 8 and 16 tiles;
//   6. the client's peak RSS writing a .safetensors and a .pt, float and int8
//      (--int8): the whole-model writer against the streamed output (the same
//      bytes); 6b. the same for a progressive pull's two outputs.
// usage: server_benchmark WEIGHTCASTD WORK_DIR [client]
//   client: sections 4-6 only
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/gaussian_checkpoint.h"
#include "bench/register.h"
#include "common/base/file.h"
#include "common/checkpoint/safetensors.h"
#include "common/tensor/tensor.h"
#include "server/rpc/services.h"
#include "tests/e2e/server_process.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

// Drains one Pull; returns the payload bytes received. Optionally keeps the
// messages.
uint64_t Drain(v1::Distribution::Stub& stub, const std::string& model,
               const std::string& tier,
               std::vector<v1::PullResponse>* keep = nullptr) {
  grpc::ClientContext context;
  v1::PullRequest request;
  request.set_model(model);
  request.set_version("v1");
  request.mutable_tier()->set_name(tier);
  auto reader = stub.Pull(&context, request);
  v1::PullResponse response;
  uint64_t bytes = 0;
  while (reader->Read(&response)) {
    if (response.has_chunk()) bytes += response.chunk().data().size();
    if (keep) keep->push_back(response);
  }
  if (!reader->Finish().ok()) std::abort();
  return bytes;
}

// The baseline: the same messages, from memory, through the same generated
// service.
class BareDistribution final : public v1::Distribution::Service {
 public:
  explicit BareDistribution(std::vector<v1::PullResponse> messages)
      : messages_(std::move(messages)) {}
  grpc::Status Pull(grpc::ServerContext* context, const v1::PullRequest*,
                    grpc::ServerWriter<v1::PullResponse>* writer) override {
    context->set_compression_algorithm(GRPC_COMPRESS_NONE);
    for (const auto& m : messages_) {
      if (!writer->Write(m)) break;
    }
    return grpc::Status::OK;
  }

 private:
  const std::vector<v1::PullResponse> messages_;
};

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

// Peak RSS of this process since the last reset (Linux: writing "5" to
// /proc/self/clear_refs resets VmHWM).
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }
double PeakRssMb() { return ProcessStatusKb(getpid(), "VmHWM:") / 1024.0; }

// CPU seconds (user + system) this process has used: decode work, whatever
// else runs on the machine.
double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
         usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

// A way to pull, for sections 4 and 4b.
struct PullVariant {
  const char* label;
  bool pipelined = true;
  bool tile_jobs = true;
  bool decode_arriving = true;
};

// Pulls `model`'s q22 tier over a link paced to 16 MB/s with each variant, 3
// rounds of the variants in turn (so that they see the same machine) after a
// warm-up, and prints each against max(transfer, decode): decode is the first
// variant's (download, then decode) seconds less the transfer, and the last
// variant's share of it hidden is printed too. `title` has a %f for the
// tier's MB. False when a pull failed.
bool ComparePacedPulls(Client& sdk, const std::string& model, const char* title,
                       const std::vector<PullVariant>& variants) {
  PullOptions options{model, "v1", {"q22"}, ""};
  options.max_bytes_per_second = 16e6;
  absl::StatusOr<PullResult> warm_up = sdk.Pull(options);
  if (!warm_up.ok()) return false;
  std::vector<double> seconds(variants.size());
  for (int round = 0; round < 3; ++round) {
    for (size_t v = 0; v < variants.size(); ++v) {
      options.pipelined = variants[v].pipelined;
      options.tile_jobs = variants[v].tile_jobs;
      options.decode_arriving = variants[v].decode_arriving;
      absl::StatusOr<PullResult> result = sdk.Pull(options);
      if (!result.ok()) return false;
      seconds[v] += result->seconds / 3;
    }
  }
  const double transfer = warm_up->bytes / 16e6;
  const double decode = seconds[0] - transfer;
  std::printf(title, warm_up->bytes / 1e6);
  std::printf(" over a link paced to 16 MB/s, 3 rounds each\n");
  std::printf("   %-66s %.2f s\n", "transfer alone (bytes / rate):", transfer);
  for (size_t v = 0; v < variants.size(); ++v) {
    std::printf("   %-66s %.2f s (%.2f x max(transfer, decode))\n",
                absl::StrCat(variants[v].label, ":").c_str(), seconds[v],
                seconds[v] / std::max(transfer, decode));
  }
  std::printf("   decode time hidden by the last: %.0f%%\n\n",
              100 * (seconds[0] - seconds.back()) / std::max(1e-9, decode));
  return true;
}

// Sections 4-6: the SDK against `server`, which has `big` (6 x 2048x2048).
int ClientSections(ServerProcess& server, v1::Distribution::Stub& distribution,
                   const std::string& big, const std::string& work) {
  auto sdk = Client::Connect({server.address()}).value();
  // --- 4: pipelined decode against download-then-decode ---
  RegisterOrExit(server.address(), "hevc", big, "q22");
  Drain(distribution, "hevc",
        "q22");  // encode and cache (24 M weights on 2 workers)
  if (!ComparePacedPulls(
          *sdk, "hevc",
          "4. pulling a %.1f MB q22 tier (24 M weights, 6 layers of 2048x2048)",
          {{"download, then decode", false},
           {"pipelined, a layer's tiles decoded once it is whole", true, true,
            false},
           {"pipelined, tiles decoded as they arrive (SDK default)"}}))
    return 1;
  // --- 4b: the same on larger layers, one job per layer against per tile
  const std::string wide =
      WriteCheckpoint(work + "/wide.safetensors", 3, 8192, 1024);
  RegisterOrExit(server.address(), "wide", wide, "q22");
  Drain(distribution, "wide", "q22");  // 3 layers of 8 tiles (1024x1024)
  if (!ComparePacedPulls(
          *sdk, "wide",
          "4b. pulling a %.1f MB q22 tier (3 layers of 8192x1024)",
          {{"download, then decode (tile jobs)", false},
           {"pipelined, one job per layer", true, false, false},
           {"pipelined, one job per tile, once the layer is whole", true, true,
            false},
           {"pipelined, one job per tile, as the tiles arrive (SDK default)"}}))
    return 1;
  // --- 5: decode throughput, one job per layer against one per tile ---
  const std::string one =
      WriteCheckpoint(work + "/one.safetensors", 1, 16384, 1024);
  RegisterOrExit(server.address(), "one", one, "q22");
  Drain(distribution, "one", "q22");  // one layer of 16 tiles (1024x1024)
  std::printf(
      "5. decode throughput of the SDK (unpaced loopback pull, no output, "
      "2 decode threads), MB/s of int8, best of 3\n");
  for (const auto& [model, weights, what] :
       {std::make_tuple("hevc", 6 * 2048.0 * 2048, "6 layers of 2048x2048"),
        std::make_tuple("wide", 3 * 8192.0 * 1024, "3 layers of 8192x1024"),
        std::make_tuple("one", 16384.0 * 1024, "1 layer of 16384x1024")}) {
    PullOptions options{model, "v1", {"q22"}, ""};
    options.decode_threads = 2;
    const PullVariant variants[] = {
        {"one job per layer", true, false, false},
        {"per tile, once the layer is whole", true, true, false},
        {"per tile, as the tiles arrive (SDK default)"}};
    constexpr int kVariants = static_cast<int>(std::size(variants));
    double best[kVariants], cpu[kVariants] = {}, wall[kVariants] = {};
    std::fill(std::begin(best), std::end(best), 1e9);
    for (int round = 0; round < 3; ++round) {
      for (int v = 0; v < kVariants; ++v) {
        options.tile_jobs = variants[v].tile_jobs;
        options.decode_arriving = variants[v].decode_arriving;
        const double cpu_before = CpuSeconds();
        auto result = sdk->Pull(options);
        if (!result.ok()) return 1;
        cpu[v] += CpuSeconds() - cpu_before;
        wall[v] += result->seconds;
        best[v] = std::min(best[v], result->seconds);
      }
    }
    // CPU / wall: how many cores the pull kept busy on average.
    std::printf("   %s:\n", what);
    for (int v = 0; v < kVariants; ++v) {
      std::printf(
          "     %-46s %6.1f MB/s (%.2f cores), %5.1f MB per CPU-second\n",
          variants[v].label, weights / 1e6 / best[v], cpu[v] / wall[v],
          3 * weights / 1e6 / cpu[v]);
    }
  }
  std::printf("\n");
  // --- 6: client peak RSS, whole-model writer against streamed output ---
  struct Output {
    const char* extension;
    bool int8;
  };
  for (const Output output : {Output{".safetensors", false},
                              {".pt", false},
                              {".safetensors", true},
                              {".pt", true}}) {
    const char* extension = output.extension;
    const char* kind = output.int8 ? "int8" : "float";
    PullOptions options{"hevc", "v1", {"q22"}, ""};
    options.int8_output = output.int8;
    double peak[2], seconds[2];
    const std::string whole = absl::StrCat(work, "/whole_", kind, extension);
    const std::string streamed_path =
        absl::StrCat(work, "/streamed_", kind, extension);
    for (bool streamed : {false, true}) {
      options.stream_output = streamed;
      options.output_path = streamed ? streamed_path : whole;
      ResetPeakRss();
      const double before = ProcessStatusKb(getpid(), "VmRSS:") / 1024.0;
      auto result = sdk->Pull(options);
      if (!result.ok() || result->streamed_output != streamed) return 1;
      peak[streamed] = PeakRssMb() - before;
      seconds[streamed] = result->seconds;
    }
    const bool same =
        ReadFileBytes(whole).value() == ReadFileBytes(streamed_path).value();
    std::printf(
        "6. pulling the 24 M-weight q22 tier to a%s %s %s (%.1f MB): client "
        "peak RSS above its RSS before the pull\n",
        output.int8 ? "n" : "", kind, extension,
        std::filesystem::file_size(whole) / 1e6);
    std::printf("   whole-model writer: %6.1f MB (%.2f s)\n", peak[0],
                seconds[0]);
    std::printf("   streamed output:    %6.1f MB (%.2f s)\n", peak[1],
                seconds[1]);
    std::printf("   byte-identical: %s\n\n", same ? "yes" : "NO");
    if (!same) return 1;
  }
  // --- 6b: the same for a progressive pull (q37 first, then q37+q22) ---
  RegisterOrExit(server.address(), "progressive", big, "q22,q37");
  Drain(distribution, "progressive", "q37+q22");  // encodes q37, then this
  {
    PullOptions options{"progressive", "v1", {"q22"}, ""};
    options.coarse_tier = "q37";
    double peak[2], seconds[2];
    const auto path = [&](bool streamed, const char* what) {
      return absl::StrCat(work, "/progressive_", streamed ? "streamed_" : "",
                          what, ".safetensors");
    };
    for (bool streamed : {false, true}) {
      options.stream_output = streamed;
      options.output_path = path(streamed, "refined");
      options.coarse_output_path = path(streamed, "coarse");
      ResetPeakRss();
      const double before = ProcessStatusKb(getpid(), "VmRSS:") / 1024.0;
      auto result = sdk->Pull(options);
      if (!result.ok() || result->streamed_output != streamed ||
          result->coarse.tier != "q37")
        return 1;
      peak[streamed] = PeakRssMb() - before;
      seconds[streamed] = result->seconds;
    }
    bool same = true;
    for (const char* what : {"coarse", "refined"}) {
      same = same && ReadFileBytes(path(false, what)).value() ==
                         ReadFileBytes(path(true, what)).value();
    }
    std::printf(
        "6b. a progressive pull (q37, then q37+q22) of the 24 M weights to two "
        "float .safetensors (%.1f MB each): client peak RSS above its RSS "
        "before the pull\n",
        std::filesystem::file_size(path(false, "refined")) / 1e6);
    std::printf("   whole-model writer: %6.1f MB (%.2f s)\n", peak[0],
                seconds[0]);
    std::printf("   streamed outputs:   %6.1f MB (%.2f s)\n", peak[1],
                seconds[1]);
    std::printf("   byte-identical (both files): %s\n\n", same ? "yes" : "NO");
    if (!same) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  using namespace weightcast;
  const bool client_only = argc == 4 && std::string(argv[3]) == "client";
  if (argc != 3 && !client_only) {
    std::fprintf(stderr,
                 "usage: server_benchmark WEIGHTCASTD WORK_DIR [client]\n");
    return 2;
  }
  const std::string server_binary = argv[1], work = argv[2];
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);

  // --- 1 and 3: a 20 MB lossless tier (24 M Gaussian weights, int8 + zstd) ---
  const std::string big =
      WriteCheckpoint(work + "/big.safetensors", 6, 2048, 2048);
  auto server =
      ServerProcess::Start(server_binary, work + "/data", {"--workers", "2"});
  if (!server.ok()) return 1;
  auto channel = Channel(server->address());
  auto distribution = v1::Distribution::NewStub(channel);
  if (client_only) {
    const int failed = ClientSections(*server, *distribution, big, work);
    server->Stop();
    return failed;
  }
  RegisterOrExit(server->address(), "big", big, "lossless");
  std::vector<v1::PullResponse> messages;
  const uint64_t tier_bytes =
      Drain(*distribution, "big", "lossless", &messages);  // encodes and caches

  BareDistribution bare(messages);
  grpc::ServerBuilder builder;
  int bare_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &bare_port);
  builder.RegisterService(&bare);
  std::unique_ptr<grpc::Server> bare_server = builder.BuildAndStart();
  auto bare_stub =
      v1::Distribution::NewStub(Channel(absl::StrCat("127.0.0.1:", bare_port)));

  constexpr int kRounds = 10;
  double weightcast_seconds = 0, bare_seconds = 0;
  for (int round = 0; round < kRounds;
       ++round) {  // interleaved, so drift hits both alike
    auto start = SteadyClock::now();
    Drain(*distribution, "big", "lossless");
    weightcast_seconds += Seconds(start);
    start = SteadyClock::now();
    Drain(*bare_stub, "big", "lossless");
    bare_seconds += Seconds(start);
  }
  const double mb = tier_bytes / 1e6;
  std::printf(
      "1. streaming a cached %.1f MB tier over loopback, %d rounds each\n", mb,
      kRounds);
  std::printf("   weightcastd (blobs read from disk per chunk): %8.1f MB/s\n",
              kRounds * mb / weightcast_seconds);
  std::printf("   bare gRPC stream of the same messages (memory): %6.1f MB/s\n",
              kRounds * mb / bare_seconds);
  std::printf("   ratio: %.2f\n\n", bare_seconds / weightcast_seconds);

  // --- 3: 100 concurrent pulls of the cached tier ---
  const uint64_t idle_kb = ProcessStatusKb(server->pid(), "VmRSS:");
  std::vector<std::thread> pullers;
  std::atomic<uint64_t> received{0};
  std::atomic<bool> sampling{true};
  uint64_t peak_kb = idle_kb;  // sampled every 5 ms while the pulls run
  std::thread sampler([&] {
    while (sampling.load()) {
      peak_kb = std::max(peak_kb, ProcessStatusKb(server->pid(), "VmRSS:"));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto start = SteadyClock::now();
  for (int i = 0; i < 100; ++i) {
    pullers.emplace_back([&] {
      auto stub = v1::Distribution::NewStub(Channel(server->address()));
      received += Drain(*stub, "big", "lossless");
    });
  }
  for (std::thread& t : pullers) t.join();
  const double concurrent_seconds = Seconds(start);
  sampling = false;
  sampler.join();
  std::printf(
      "3. 100 concurrent pulls of the %.1f MB tier: %.1f MB in %.1f s\n", mb,
      received / 1e6, concurrent_seconds);
  std::printf("   server RSS idle with the tier cached: %6.1f MB\n",
              idle_kb / 1024.0);
  std::printf(
      "   server peak RSS during the pulls:     %6.1f MB (sampled every 5 "
      "ms)\n",
      peak_kb / 1024.0);
  std::printf(
      "   server VmHWM over its whole life (registration and encoding "
      "included): %.1f MB\n\n",
      ProcessStatusKb(server->pid(), "VmHWM:") / 1024.0);
  if (ClientSections(*server, *distribution, big, work) != 0) return 1;
  server->Stop();
  bare_server->Shutdown();

  // --- 2: encode throughput, 1 worker against 2 ---
  const std::string four =
      WriteCheckpoint(work + "/four.safetensors", 4, 1024, 1024);
  double encode_seconds[3] = {0, 0, 0};
  for (int workers : {1, 2}) {
    auto encoder = ServerProcess::Start(
        server_binary, absl::StrCat(work, "/data-w", workers),
        {"--workers", std::to_string(workers), "--preset", "veryfast"});
    if (!encoder.ok()) return 1;
    auto c = Channel(encoder->address());
    auto d = v1::Distribution::NewStub(c);
    RegisterOrExit(encoder->address(), "four", four, "q27");
    start = SteadyClock::now();
    Drain(*d, "four", "q27");  // cold: encodes 4 layers of 1 M weights
    encode_seconds[workers] = Seconds(start);
    encoder->Stop();
  }
  std::printf(
      "2. encoding a cold q27 tier, 4 layers of 1024x1024 (x265 veryfast)\n");
  std::printf("   1 worker:  %.2f s (%.2f MB/s of int8)\n", encode_seconds[1],
              4.194304 / encode_seconds[1]);
  std::printf("   2 workers: %.2f s (%.2f MB/s of int8)\n", encode_seconds[2],
              4.194304 / encode_seconds[2]);
  std::printf("   speed-up: %.2fx\n", encode_seconds[1] / encode_seconds[2]);
  return 0;
}
