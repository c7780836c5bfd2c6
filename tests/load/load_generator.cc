// Load generator: mixed traffic against the real weightcastd on 127.0.0.1 —
// pulls of several tiers, registrations, describes, and idle device watches
// held open throughout — for a bounded time and operation count. Reports per
// operation count, errors, p50/p99 latency and throughput, and the server's RSS
// (idle and peak). Exits 1 if any operation failed. usage: load_generator
// WEIGHTCASTD FIXTURE_DIR WORK_DIR [SECONDS=20] [CLIENTS=8] [WATCHERS=50]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/sdk/client.h"
#include "tests/e2e/server_process.h"

namespace weightcast {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxOpsPerClient = 100000;  // the other bound, beside time

struct Samples {
  std::vector<double> ms;
  int errors = 0;
  std::string first_error;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Run(const std::string& weightcastd, const std::string& fixtures,
        const std::string& work, int seconds, int clients, int watchers) {
  std::filesystem::remove_all(work);
  auto server = ServerProcess::Start(weightcastd, work + "/data",
                                     {"--max-streams-per-client", "10000"});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  auto admin = Client::Connect({server->address()}).value();
  const std::vector<std::string> tiers = {"lossless", "q27", "q32"};
  if (!admin->Register({"m", "v1", fixtures + "/mlp.pt", "lossless,q27,q32"})
           .ok())
    return 1;
  for (const std::string& tier : tiers) {
    if (!admin->Pull({"m", "v1", {tier}, ""}).ok())
      return 1;  // encoded before the clock starts
  }
  const uint64_t idle_kb = ProcessStatusKb(server->pid(), "VmRSS:");

  std::atomic<bool> stop{false};
  std::vector<std::thread> watch_threads;
  std::vector<std::unique_ptr<Client>> watch_clients;
  for (int c = 0; c < 4; ++c)
    watch_clients.push_back(Client::Connect({server->address()}).value());
  std::atomic<int> watch_errors{0};
  for (int i = 0; i < watchers; ++i) {
    watch_threads.emplace_back([&, i] {
      WatchOptions watch{absl::StrCat("load-device-", i), {}, {"m"}, "", {},
                         [&] { return stop.load(); }};
      const absl::Status ended = watch_clients[i % watch_clients.size()]->Watch(
          watch, [](const AssignmentInfo&) {});
      if (!stop.load() || ended.code() != absl::StatusCode::kCancelled)
        ++watch_errors;
    });
  }

  absl::Mutex mu;
  std::map<std::string, Samples> samples;
  uint64_t peak_kb = idle_kb;
  std::thread sampler([&] {
    while (!stop.load()) {
      peak_kb = std::max(peak_kb, ProcessStatusKb(server->pid(), "VmRSS:"));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(seconds);
  std::vector<std::thread> workers;
  for (int w = 0; w < clients; ++w) {
    workers.emplace_back([&, w] {
      auto client = Client::Connect({server->address()}).value();
      std::mt19937 rng(w);
      for (int op = 0; op < kMaxOpsPerClient && Clock::now() < deadline; ++op) {
        const int dice = std::uniform_int_distribution<int>(0, 99)(rng);
        std::string name;
        absl::Status status;
        const auto t0 = Clock::now();
        if (dice < 75) {
          const std::string& tier = tiers[dice % tiers.size()];
          name = "pull " + tier;
          status = client->Pull({"m", "v1", {tier}, ""}).status();
        } else if (dice < 90) {
          name = "describe";
          status = client->Describe("m", "v1").status();
        } else {
          name = "register";
          status =
              client
                  ->Register({absl::StrCat("load-", w), absl::StrCat("v", op),
                              fixtures + "/mlp.pt", "lossless"})
                  .status();
        }
        const double ms =
            std::chrono::duration<double, std::milli>(Clock::now() - t0)
                .count();
        absl::MutexLock lock(&mu);
        Samples& s = samples[name];
        s.ms.push_back(ms);
        if (!status.ok()) {
          if (s.errors++ == 0) s.first_error = std::string(status.message());
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : watch_threads) t.join();
  sampler.join();

  int errors = watch_errors.load();
  std::printf(
      "%d clients for %.1f s on 127.0.0.1, %d device watches held open "
      "throughout\n",
      clients, elapsed, watchers);
  std::printf(
      "| operation | count | errors | p50 ms | p99 ms | per second "
      "|\n|---|---|---|---|---|---|\n");
  for (const auto& [name, s] : samples) {
    std::printf("| %s | %zu | %d | %.2f | %.2f | %.1f |\n", name.c_str(),
                s.ms.size(), s.errors, Percentile(s.ms, 0.5),
                Percentile(s.ms, 0.99), s.ms.size() / elapsed);
    if (s.errors) std::printf("  first error: %s\n", s.first_error.c_str());
    errors += s.errors;
  }
  std::printf("watch errors: %d; server RSS: %.1f MB idle, %.1f MB peak\n",
              watch_errors.load(), idle_kb / 1024.0, peak_kb / 1024.0);
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: load_generator WEIGHTCASTD FIXTURE_DIR WORK_DIR "
                 "[SECONDS=20] [CLIENTS=8] [WATCHERS=50]\n");
    return 2;
  }
  int seconds = 20, clients = 8, watchers = 50;
  if ((argc > 4 && (!absl::SimpleAtoi(argv[4], &seconds) || seconds < 1 ||
                    seconds > 3600)) ||
      (argc > 5 && (!absl::SimpleAtoi(argv[5], &clients) || clients < 1 ||
                    clients > 256)) ||
      (argc > 6 && (!absl::SimpleAtoi(argv[6], &watchers) || watchers < 0 ||
                    watchers > 5000))) {
    std::fprintf(stderr, "SECONDS 1..3600, CLIENTS 1..256, WATCHERS 0..5000\n");
    return 2;
  }
  return weightcast::Run(argv[1], argv[2], argv[3], seconds, clients, watchers);
}
