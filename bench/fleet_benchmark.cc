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
//      the same server idle;
//   3. a fleet at scale (default 10,000 watchers): Watch streams opened with
//      gRPC's callback client API over kScaleConnections connections (so this
//      process needs few threads), server threads and RSS per watcher, the
//      time from StartRollout (and from a rollback) to each watcher's
//      assignment event (p50/p99/max), every watcher's status report sent at
//      once (time until all are answered), then 1,000 devices pulling a small
//      tier (kPullThreads at a time).
// usage: fleet_benchmark WEIGHTCASTD FIXTURE_DIR WORK_DIR [--scale N]
//        [--scale-only]
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

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
#include "weightcast/v1/weightcast.grpc.pb.h"

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

constexpr int kScaleConnections = 50;
constexpr int kScaleDevicePulls = 1000;
constexpr int kPullThreads = 16;
constexpr double kPhaseLimitSeconds = 120;

// Samples the server's threads and RSS every 20 ms: the peak of each.
class ProcessSampler {
 public:
  explicit ProcessSampler(pid_t pid)
      : pid_(pid), thread_([this] {
          while (!stop_.load()) {
            Sample();
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  ~ProcessSampler() {
    stop_ = true;
    thread_.join();
  }
  void Sample() {
    const uint64_t threads = ProcessStatusKb(pid_, "Threads:");
    const uint64_t rss = ProcessStatusKb(pid_, "VmRSS:");
    uint64_t seen = max_threads_.load();
    while (threads > seen &&
           !max_threads_.compare_exchange_weak(seen, threads)) {
    }
    seen = max_rss_kb_.load();
    while (rss > seen && !max_rss_kb_.compare_exchange_weak(seen, rss)) {
    }
  }
  // Peaks since the last Reset.
  uint64_t max_threads() const { return max_threads_.load(); }
  uint64_t max_rss_kb() const { return max_rss_kb_.load(); }
  void Reset() {
    max_threads_ = 0;
    max_rss_kb_ = 0;
    Sample();
  }

 private:
  const pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> max_threads_{0};
  std::atomic<uint64_t> max_rss_kb_{0};
  std::thread thread_;
};

// One simulated device's Watch stream on the callback client API: records when
// it first sees an assignment to the version it is waiting for.
class BenchWatcher final : public grpc::ClientReadReactor<v1::WatchEvent> {
 public:
  BenchWatcher(v1::Distribution::Stub* stub, const std::string& device_id,
               const std::string& installed) {
    request_.set_device_id(device_id);
    request_.add_models("m");
    v1::InstalledModel* held = request_.add_installed();
    held->set_model("m");
    held->set_version(installed);
    stub->async()->Watch(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  // From now on, the first assignment to `version` is timed.
  void Expect(const std::string& version) {
    absl::MutexLock lock(&mu_);
    expected_ = version;
    arrived_ = Clock::time_point();
  }
  // When the expected assignment arrived (epoch: not yet).
  Clock::time_point arrived() {
    absl::MutexLock lock(&mu_);
    return arrived_;
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (event_.has_assignment()) {
      absl::MutexLock lock(&mu_);
      if (event_.assignment().version() == expected_ &&
          arrived_ == Clock::time_point()) {
        arrived_ = Clock::now();
      }
    }
    StartRead(&event_);
  }
  void OnDone(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
    status_ = status;
  }
  void Cancel() { context_.TryCancel(); }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  std::string error() {
    absl::MutexLock lock(&mu_);
    return done_ && !status_.ok() && status_.error_code() != grpc::CANCELLED
               ? status_.error_message()
               : "";
  }

 private:
  grpc::ClientContext context_;
  v1::WatchRequest request_;
  v1::WatchEvent event_;
  absl::Mutex mu_;
  std::string expected_ ABSL_GUARDED_BY(mu_);
  Clock::time_point arrived_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

struct Latency {
  double p50 = 0, p99 = 0, max = 0;
  size_t arrived = 0;
};

// Waits (at most kPhaseLimitSeconds) for every watcher's expected event; the
// latencies from `start`.
Latency AwaitAssignments(
    const std::vector<std::unique_ptr<BenchWatcher>>& watchers,
    Clock::time_point start) {
  std::vector<double> seconds;
  while (Seconds(start) < kPhaseLimitSeconds) {
    seconds.clear();
    for (const auto& w : watchers) {
      const Clock::time_point t = w->arrived();
      if (t != Clock::time_point())
        seconds.push_back(std::chrono::duration<double>(t - start).count());
    }
    if (seconds.size() == watchers.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Latency out;
  out.arrived = seconds.size();
  if (seconds.empty()) return out;
  std::sort(seconds.begin(), seconds.end());
  // Watchers still waiting count as the limit.
  seconds.resize(watchers.size(), kPhaseLimitSeconds);
  out.p50 = seconds[seconds.size() / 2];
  out.p99 = seconds[std::min(seconds.size() - 1, seconds.size() * 99 / 100)];
  out.max = seconds.back();
  return out;
}

void RaiseFileLimit(size_t needed) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < needed) {
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, needed);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

void FleetAtScale(const std::string& weightcastd, const std::string& fixtures,
                  const std::string& work, int watchers_wanted) {
  RaiseFileLimit(4096 + 2 * kScaleConnections);
  std::filesystem::remove_all(work);
  auto server = ServerProcess::Start(
      weightcastd, work + "/data",
      {"--keepalive-seconds", "15", "--max-streams-per-client",
       absl::StrCat(watchers_wanted + 100)});
  Check(server.status(), "weightcastd");
  auto admin = Client::Connect({server->address()}).value();
  Check(admin->Register({"m", "v1", fixtures + "/mlp.pt", "lossless"}).status(),
        "register");
  Check(admin->Register({"m", "v2", fixtures + "/training.pt", "lossless"})
            .status(),
        "register");
  Check(admin->StartRollout("m", "v1", 100, {}).status(), "rollout v1");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ProcessSampler sampler(server->pid());
  const uint64_t idle_kb = ProcessStatusKb(server->pid(), "VmRSS:");
  const uint64_t idle_threads = ProcessStatusKb(server->pid(), "Threads:");

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Distribution::Stub>> stubs;
  for (int c = 0; c < kScaleConnections; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("weightcast.bench_connection", c);  // one connection each
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(grpc::CreateCustomChannel(
        server->address(), grpc::InsecureChannelCredentials(), args));
    stubs.push_back(v1::Distribution::NewStub(channels.back()));
  }
  const uint64_t client_threads_before = ProcessStatusKb(getpid(), "Threads:");
  const auto opening = Clock::now();
  std::vector<std::unique_ptr<BenchWatcher>> watchers;
  for (int i = 0; i < watchers_wanted; ++i) {
    watchers.push_back(std::make_unique<BenchWatcher>(
        stubs[i % stubs.size()].get(), absl::StrCat("scale-", i), "v1"));
  }
  uint64_t subscribers = 0;
  while (Seconds(opening) < kPhaseLimitSeconds) {
    subscribers = admin->GetRollout("m").value().subscribers;
    if (subscribers >= static_cast<uint64_t>(watchers_wanted)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double open_s = Seconds(opening);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const uint64_t busy_kb = ProcessStatusKb(server->pid(), "VmRSS:");
  const uint64_t busy_threads = ProcessStatusKb(server->pid(), "Threads:");
  const uint64_t client_threads = ProcessStatusKb(getpid(), "Threads:");
  std::printf(
      "fleet at scale: %llu of %d Watch streams open in %.1f s over %d "
      "connections (this process: %llu threads, %llu before the streams)\n",
      static_cast<unsigned long long>(subscribers), watchers_wanted, open_s,
      kScaleConnections, static_cast<unsigned long long>(client_threads),
      static_cast<unsigned long long>(client_threads_before));
  std::printf(
      "  server idle: threads %llu -> %llu, RSS %.1f MB -> %.1f MB: %.1f kB "
      "per watcher\n",
      static_cast<unsigned long long>(idle_threads),
      static_cast<unsigned long long>(busy_threads), idle_kb / 1024.0,
      busy_kb / 1024.0,
      subscribers ? double(busy_kb - idle_kb) / subscribers : 0.0);

  for (auto& w : watchers) w->Expect("v2");
  sampler.Reset();
  auto start = Clock::now();
  Check(admin->StartRollout("m", "v2", 100, {}).status(), "rollout v2");
  const Latency rollout = AwaitAssignments(watchers, start);
  std::printf(
      "  rollout to 100 %%: %zu of %zu watchers had the assignment; from "
      "StartRollout p50 %.3f s, p99 %.3f s, max %.3f s (server peak: %llu "
      "threads)\n",
      rollout.arrived, watchers.size(), rollout.p50, rollout.p99, rollout.max,
      static_cast<unsigned long long>(sampler.max_threads()));

  for (auto& w : watchers) w->Expect("v1");
  sampler.Reset();
  start = Clock::now();
  Check(admin->RollbackRollout("m").status(), "rollback");
  const Latency rollback = AwaitAssignments(watchers, start);
  std::printf(
      "  rollback: %zu of %zu watchers had the assignment; p50 %.3f s, p99 "
      "%.3f s, max %.3f s (server peak: %llu threads)\n",
      rollback.arrived, watchers.size(), rollback.p50, rollback.p99,
      rollback.max, static_cast<unsigned long long>(sampler.max_threads()));

  // Every watcher reports at once (the callback client API: no thread each).
  sampler.Reset();
  std::atomic<int> answered{0}, failed{0};
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::DeviceStatus> reports(watchers.size());
  std::vector<v1::ReportStatusResponse> responses(watchers.size());
  std::string first_error;
  absl::Mutex error_mu;
  start = Clock::now();
  for (size_t i = 0; i < watchers.size(); ++i) {
    v1::DeviceStatus& r = reports[i];
    r.set_device_id(absl::StrCat("scale-", i));
    r.set_model("m");
    r.set_version("v1");
    r.set_state(v1::DeviceStatus::INSTALLED);
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() +
                                  std::chrono::seconds(60));
    stubs[i % stubs.size()]->async()->ReportStatus(
        contexts.back().get(), &r, &responses[i], [&](grpc::Status status) {
          if (!status.ok()) {
            absl::MutexLock lock(&error_mu);
            if (first_error.empty()) first_error = status.error_message();
            failed.fetch_add(1);
          }
          answered.fetch_add(1);
        });
  }
  while (answered.load() < static_cast<int>(watchers.size()) &&
         Seconds(start) < kPhaseLimitSeconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const double reports_s = Seconds(start);
  const uint64_t installed =
      admin->GetRollout("m").value().Devices("v1", "INSTALLED");
  std::printf(
      "  %zu status reports sent at once: all answered in %.3f s, %d "
      "failed%s%s; "
      "%llu devices INSTALLED v1 in fleet.db (server peak: %llu threads)\n",
      watchers.size(), reports_s, failed.load(),
      first_error.empty() ? "" : ": ", first_error.c_str(),
      static_cast<unsigned long long>(installed),
      static_cast<unsigned long long>(sampler.max_threads()));

  // 1,000 devices pull the rolled-back version's tier, kPullThreads at a time.
  Check(admin->Pull({"m", "v1", {"lossless"}, ""}).status(), "warm pull");
  sampler.Reset();
  std::vector<std::unique_ptr<Client>> pullers;
  for (int t = 0; t < kPullThreads; ++t)
    pullers.push_back(Client::Connect({server->address()}).value());
  std::atomic<int> next{0}, pull_errors{0};
  uint64_t tier_bytes = 0;
  start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kPullThreads; ++t) {
    threads.emplace_back([&, t] {
      while (next.fetch_add(1) < kScaleDevicePulls &&
             Seconds(start) < kPhaseLimitSeconds) {
        PullOptions pull{"m", "v1", {"lossless"}, ""};
        pull.decode_threads = 1;
        auto pulled = pullers[t]->Pull(pull);
        if (!pulled.ok()) {
          pull_errors.fetch_add(1);
        } else if (t == 0) {
          tier_bytes = pulled->bytes;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::printf(
      "  %d device pulls of a %llu-byte tier (%d at a time): %.2f s, %d "
      "errors (server peak: %llu threads, %.1f MB)\n",
      kScaleDevicePulls, static_cast<unsigned long long>(tier_bytes),
      kPullThreads, Seconds(start), pull_errors.load(),
      static_cast<unsigned long long>(sampler.max_threads()),
      sampler.max_rss_kb() / 1024.0);

  int stream_errors = 0;
  std::string stream_error;
  for (auto& w : watchers) {
    const std::string e = w->error();
    if (!e.empty()) {
      ++stream_errors;
      stream_error = e;
    }
  }
  // The drain finishes every open Watch stream (UNAVAILABLE).
  start = Clock::now();
  server->Terminate();
  int still_open = 0;
  while (Seconds(start) < kPhaseLimitSeconds) {
    still_open = 0;
    for (auto& w : watchers) still_open += !w->done();
    if (still_open == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::printf(
      "  watch streams that ended with an error before the drain: %d%s%s; "
      "SIGTERM ended all open streams in %.2f s (%d still open)\n",
      stream_errors, stream_error.empty() ? "" : ": ", stream_error.c_str(),
      Seconds(start), still_open);
  for (auto& w : watchers) w->Cancel();
  for (auto& w : watchers) {
    const auto wait = Clock::now();
    while (!w->done() && Seconds(wait) < 5)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server->Stop();
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: fleet_benchmark WEIGHTCASTD FIXTURE_DIR WORK_DIR "
                 "[--scale N] [--scale-only]\n");
    return 2;
  }
  int scale = 10000;
  bool scale_only = false;
  for (int i = 4; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--scale" && i + 1 < argc) {
      scale = std::atoi(argv[++i]);
    } else if (arg == "--scale-only") {
      scale_only = true;
    } else {
      std::fprintf(stderr, "fleet_benchmark: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (scale < 1 || scale > 100000) {
    std::fprintf(stderr, "fleet_benchmark: --scale is 1..100000\n");
    return 2;
  }
  if (!scale_only) {
    weightcast::RolloutLatency(argv[1], argv[2],
                               std::string(argv[3]) + "/rollout");
    weightcast::IdleSubscriberMemory(argv[1], argv[2],
                                     std::string(argv[3]) + "/idle");
  }
  weightcast::FleetAtScale(argv[1], argv[2], std::string(argv[3]) + "/scale",
                           scale);
  return 0;
}
