// Fleet push benchmarks against the real weightcastd on 127.0.0.1 (started by
// this program):
//   1. rollout latency: from StartRollout to all 50 agents (threads, one
//   connection each) having
//      the new version installed (pulled, verified, `current` switched), over
//      several rounds; beside it, one client's plain pull of the same tier (the
//      floor one device pays), and a rollback (the previous version is on disk:
//      notification and switch only);
//   2. server memory per idle subscriber: RSS and threads with 500 open Watch
//   streams against
//      the same server idle.
// usage: fleet_benchmark WEIGHTCASTD FIXTURE_DIR WORK_DIR
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/agent/agent.h"
#include "client/sdk/client.h"
#include "tests/e2e/server_process.h"

namespace weightcast {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kAgents = 50;
constexpr int kRounds = 5;
constexpr int kSubscribers = 500;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what,
                 std::string(status.message()).c_str());
    std::exit(1);
  }
}

// Seconds until every agent directory's `current` is `version` (polled every 2
// ms; at most 120 s).
double UntilAll(const std::vector<std::string>& dirs,
                const std::string& version, Clock::time_point start) {
  while (Seconds(start) < 120) {
    if (std::all_of(dirs.begin(), dirs.end(), [&](const std::string& d) {
          return Agent::Installed(d, "m") == version;
        })) {
      return Seconds(start);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::fprintf(stderr, "agents did not all install %s within 120 s\n",
               version.c_str());
  std::exit(1);
}

void RolloutLatency(const std::string& weightcastd, const std::string& fixtures,
                    const std::string& work) {
  std::filesystem::remove_all(work);
  auto server = ServerProcess::Start(weightcastd, work + "/data",
                                     {"--keepalive-seconds", "5"});
  Check(server.status(), "weightcastd");
  auto admin = Client::Connect({server->address()}).value();
  std::vector<std::string> dirs;
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::unique_ptr<Agent>> agents;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  for (int i = 0; i < kAgents; ++i) {
    dirs.push_back(absl::StrCat(work, "/device-", i));
    clients.push_back(Client::Connect({server->address()}).value());
    AgentOptions options{absl::StrCat("device-", i), dirs.back(), {"m"}};
    options.tier.name = "lossless";
    agents.push_back(std::make_unique<Agent>(clients.back().get(), options));
    threads.emplace_back([&, i] { agents[i]->Run(stop).IgnoreError(); });
  }
  std::vector<double> rollout_s, pull_s;
  uint64_t tier_bytes = 0;
  for (int round = 0; round < kRounds; ++round) {
    const std::string version = absl::StrCat("r", round);
    Check(admin
              ->Register({"m", version,
                          fixtures + (round % 2 ? "/training.pt" : "/mlp.pt"),
                          "lossless"})
              .status(),
          "register");
    auto pulled =
        admin->Pull({"m",
                     version,
                     {"lossless"},
                     ""});  // encodes the tier: not part of the latency
    Check(pulled.status(), "warm pull");
    tier_bytes = pulled->bytes;
    const auto single = Clock::now();
    Check(admin->Pull({"m", version, {"lossless"}, ""}).status(),
          "single pull");
    pull_s.push_back(Seconds(single));
    const auto start = Clock::now();
    Check(admin->StartRollout("m", version, 100, {}).status(), "rollout");
    rollout_s.push_back(UntilAll(dirs, version, start));
  }
  const auto start = Clock::now();
  Check(admin->RollbackRollout("m").status(), "rollback");
  const double rollback_s =
      UntilAll(dirs, absl::StrCat("r", kRounds - 2), start);
  stop = true;
  for (auto& t : threads) t.join();
  std::sort(rollout_s.begin(), rollout_s.end());
  std::sort(pull_s.begin(), pull_s.end());
  std::printf(
      "rollout to %d agents, all installed (tier %llu bytes each), %d rounds: "
      "min %.3f s, median %.3f s, max %.3f s\n",
      kAgents, static_cast<unsigned long long>(tier_bytes), kRounds,
      rollout_s.front(), rollout_s[kRounds / 2], rollout_s.back());
  std::printf("  one client's pull of the same tier: median %.3f s\n",
              pull_s[kRounds / 2]);
  std::printf(
      "  rollback to the previous version (kept on disk, no download), all "
      "switched: %.3f s\n",
      rollback_s);
}

void IdleSubscriberMemory(const std::string& weightcastd,
                          const std::string& fixtures,
                          const std::string& work) {
  std::filesystem::remove_all(work);
  auto server = ServerProcess::Start(
      weightcastd, work + "/data",
      {"--keepalive-seconds", "15", "--max-streams-per-client", "1000"});
  Check(server.status(), "weightcastd");
  auto admin = Client::Connect({server->address()}).value();
  Check(admin->Register({"m", "v1", fixtures + "/mlp.pt", "lossless"}).status(),
        "register");
  Check(admin->StartRollout("m", "v1", 0, {}).status(),
        "rollout");  // nobody assigned: idle watches
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t idle_kb = ProcessStatusKb(server->pid(), "VmRSS:");
  const uint64_t idle_threads = ProcessStatusKb(server->pid(), "Threads:");
  std::vector<std::unique_ptr<Client>> clients;
  for (int c = 0; c < 10; ++c)
    clients.push_back(Client::Connect({server->address()}).value());
  std::atomic<bool> stop{false};
  std::vector<std::thread> watchers;
  for (int i = 0; i < kSubscribers; ++i) {
    watchers.emplace_back([&, i] {
      WatchOptions watch{absl::StrCat("idle-", i),   {}, {"m"}, "", {},
                         [&] { return stop.load(); }};
      clients[i % clients.size()]
          ->Watch(watch, [](const AssignmentInfo&) {})
          .IgnoreError();
    });
  }
  const auto start = Clock::now();
  while (admin->GetRollout("m").value().subscribers < kSubscribers &&
         Seconds(start) < 60) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const uint64_t busy_kb = ProcessStatusKb(server->pid(), "VmRSS:");
  const uint64_t busy_threads = ProcessStatusKb(server->pid(), "Threads:");
  const uint64_t subscribers = admin->GetRollout("m").value().subscribers;
  stop = true;
  for (auto& t : watchers) t.join();
  std::printf(
      "idle subscribers: server RSS %.1f MB with none, %.1f MB with %llu: %.1f "
      "kB per subscriber; "
      "threads %llu -> %llu\n",
      idle_kb / 1024.0, busy_kb / 1024.0,
      static_cast<unsigned long long>(subscribers),
      subscribers ? double(busy_kb - idle_kb) / subscribers : 0.0,
      static_cast<unsigned long long>(idle_threads),
      static_cast<unsigned long long>(busy_threads));
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr,
                 "usage: fleet_benchmark WEIGHTCASTD FIXTURE_DIR WORK_DIR\n");
    return 2;
  }
  weightcast::RolloutLatency(argv[1], argv[2],
                             std::string(argv[3]) + "/rollout");
  weightcast::IdleSubscriberMemory(argv[1], argv[2],
                                   std::string(argv[3]) + "/idle");
  return 0;
}
