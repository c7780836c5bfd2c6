// Fleet push end to end: 50 device agents (threads, each with its own
// connection and directory) against the real weightcastd. A 20 % rollout
// reaches exactly the devices whose stable hash puts them in the 20 % (and the
// named group); a server restart mid-rollout loses nothing; an agent offline
// during the rollout catches up when it comes back; 100 % reaches the rest; a
// rollback returns every device to the old version without downloading it
// again. Every wait is bounded.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "client/agent/agent.h"
#include "client/sdk/client.h"
#include "gtest/gtest.h"
#include "server/push/fleet.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reliability_log.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();
constexpr int kDevices = 50;

struct Device {
  std::string id;
  std::string dir;
  std::unique_ptr<Client> client;
  std::unique_ptr<Agent> agent;
  std::atomic<bool> stop{false};
  std::thread thread;

  ~Device() { Stop(); }  // also when an assertion returns early

  void Start(const std::string& address) {
    client = Client::Connect({address, absl::Seconds(30)}).value();
    AgentOptions options{id,
                         dir,
                         {"m"},
                         id == "device-07" ? std::vector<std::string>{"canary"}
                                           : std::vector<std::string>{}};
    options.tier.name = "lossless";
    options.max_backoff = absl::Seconds(1);
    agent = std::make_unique<Agent>(client.get(), options);
    stop = false;
    thread = std::thread([this] { agent->Run(stop).IgnoreError(); });
  }
  void Stop() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  std::string Installed() const { return Agent::Installed(dir, "m"); }
};

// Polls `done` every 50 ms for at most 60 s.
bool Eventually(const std::function<bool()>& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

TEST(FleetEndToEnd, FiftyAgentsThroughARolloutARestartAndARollback) {
  const std::string dir = FreshDir("fleet_50");
  const int port = FreeLoopbackPort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const std::vector<std::string> flags = {
      "--listen", address, "--keepalive-seconds", "1", "--preset", "ultrafast"};
  auto server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto admin = Client::Connect({address}).value();
  ASSERT_TRUE(
      admin->Register({"m", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  ASSERT_TRUE(
      admin->Register({"m", "v2", kFixtures + "/training.pt", "lossless"})
          .ok());

  std::vector<std::unique_ptr<Device>> devices;
  std::set<std::string> in_twenty;  // worked out here from the published hash
  for (int i = 0; i < kDevices; ++i) {
    auto d = std::make_unique<Device>();
    d->id = absl::StrFormat("device-%02d", i);
    d->dir = dir + "/" + d->id;
    if (RolloutBucket("m", d->id) < 2000 || d->id == "device-07")
      in_twenty.insert(d->id);
    d->Start(address);
    devices.push_back(std::move(d));
  }
  ASSERT_GE(in_twenty.size(), 3u);
  ASSERT_LE(in_twenty.size(), 20u);
  auto all_on = [&](const std::string& version) {
    return [&devices, version] {
      for (const auto& d : devices) {
        if (d->Installed() != version) return false;
      }
      return true;
    };
  };

  // Everyone gets v1.
  ASSERT_TRUE(admin->StartRollout("m", "v1", 100, {}).ok());
  ASSERT_TRUE(Eventually(all_on("v1"))) << "not every agent installed v1";
  // An agent reports INSTALLED just after switching its link.
  EXPECT_TRUE(Eventually([&] {
    return admin->GetRollout("m").value().Devices("v1", "INSTALLED") ==
           kDevices;
  }));

  // One device of the 20 % goes offline; v2 to 20 % and the canary group.
  Device& offline =
      **std::find_if(devices.begin(), devices.end(), [&](const auto& d) {
        return in_twenty.count(d->id) && d->id != "device-07";
      });
  offline.Stop();
  auto rollout = admin->StartRollout("m", "v2", 20, {"canary"});
  ASSERT_TRUE(rollout.ok()) << rollout.status();
  EXPECT_EQ(rollout->baseline_version, "v1");
  const uint64_t expected_v2 =
      in_twenty.size() - 1;  // the offline one cannot have it yet
  ASSERT_TRUE(Eventually([&] {
    return admin->GetRollout("m").value().Devices("v2", "INSTALLED") ==
           expected_v2;
  }));
  for (const auto& d : devices) {
    if (d.get() == &offline) continue;
    EXPECT_EQ(d->Installed(), in_twenty.count(d->id) ? "v2" : "v1") << d->id;
  }

  // The server restarts mid-rollout: the rollout and the device reports are
  // still there.
  server->Stop();
  server = ServerProcess::Start(kServer, dir + "/data", flags);
  ASSERT_TRUE(server.ok()) << server.status();
  admin = Client::Connect({address}).value();
  absl::StatusOr<RolloutInfo> after_or;
  ASSERT_TRUE(Eventually([&] {
    return (after_or = admin->GetRollout("m")).ok();
  })) << after_or.status();
  const RolloutInfo& after = *after_or;
  EXPECT_EQ(after.version, "v2");
  EXPECT_EQ(after.baseline_version, "v1");
  EXPECT_EQ(after.percent, 20);
  EXPECT_EQ(after.state, "ACTIVE");
  EXPECT_EQ(after.groups, std::vector<std::string>{"canary"});
  EXPECT_EQ(after.Devices("v2", "INSTALLED"), expected_v2);
  ASSERT_TRUE(Eventually([&] {
    return admin->GetRollout("m").value().subscribers == kDevices - 1;
  })) << "agents did not reconnect";

  // The offline agent comes back and catches up.
  offline.Start(address);
  ASSERT_TRUE(Eventually([&] { return offline.Installed() == "v2"; }))
      << offline.id << " did not catch up";

  // 100 %: the rest follow.
  ASSERT_TRUE(admin->UpdateRollout("m", {.percent = 100}).ok());
  ASSERT_TRUE(Eventually(all_on("v2"))) << "not every agent installed v2";
  ASSERT_TRUE(Eventually([&] {
    return admin->GetRollout("m").value().Devices("v2", "INSTALLED") ==
           kDevices;
  }));

  // Rollback: everyone back on v1, from the kept previous version, not a
  // download.
  std::vector<int> downloads;
  for (const auto& d : devices)
    downloads.push_back(d->agent->stats().downloads);
  const RolloutInfo rolled_back = admin->RollbackRollout("m").value();
  EXPECT_EQ(rolled_back.state, "ROLLED_BACK");
  ASSERT_TRUE(Eventually(all_on("v1"))) << "not every agent returned to v1";
  ASSERT_TRUE(Eventually([&] {
    return admin->GetRollout("m").value().Devices("v1", "INSTALLED") ==
           kDevices;
  }));
  for (size_t i = 0; i < devices.size(); ++i) {
    EXPECT_EQ(devices[i]->agent->stats().downloads, downloads[i])
        << devices[i]->id;
    EXPECT_EQ(devices[i]->agent->stats().failures, 0) << devices[i]->id;
    EXPECT_TRUE(
        std::filesystem::exists(devices[i]->dir + "/m/current/model.pt"));
  }
  for (auto& d : devices) d->Stop();
  if (!HasFailure()) {
    RecordReliability(
        "weightcastd restarted (SIGTERM) in the middle of a 20 % rollout to 50 "
        "agents",
        "rollout, percentage, groups and device reports read back unchanged; "
        "all 49 online agents "
        "reconnect",
        "the rollout then completes to 100 % and rolls back");
  }
}

TEST(FleetEndToEnd, BadRequestsAreRefusedClearly) {
  const std::string dir = FreshDir("fleet_bad");
  auto server = ServerProcess::Start(kServer, dir + "/data",
                                     {"--keepalive-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"m", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  EXPECT_EQ(client->StartRollout("m", "v9", 10, {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client->StartRollout("m", "v1", 120, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->GetRollout("m").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client->StartRollout("m", "v1", 10, {}).value().baseline_version,
            "");
  EXPECT_EQ(client->RollbackRollout("m").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client->UpdateRollout("m", {.percent = 101}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      client->ReportStatus({"bad id!", "m", "v1", "", "INSTALLED"}).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->ReportStatus({"dev", "m", "v1", "", "SLEEPING"}).code(),
            absl::StatusCode::kInvalidArgument);
  WatchOptions no_models{"dev"};
  EXPECT_EQ(client->Watch(no_models, [](const AssignmentInfo&) {}).code(),
            absl::StatusCode::kInvalidArgument);
  // A watch ends with UNAVAILABLE when the server drains, not at the grace
  // deadline.
  WatchOptions watch{"dev", {}, {"m"}};
  int keepalives = 0;
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    server->Terminate();
  });
  const auto start = std::chrono::steady_clock::now();
  const absl::Status ended = client->Watch(
      watch, [](const AssignmentInfo&) {}, [&] { ++keepalives; });
  stopper.join();
  EXPECT_EQ(ended.code(), absl::StatusCode::kUnavailable) << ended;
  EXPECT_GE(keepalives, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
  EXPECT_EQ(server->Stop(), 0);
  if (!HasFailure()) {
    RecordReliability(
        "rollout of an unknown version; percent 120; rollback without an "
        "earlier version",
        "NOT_FOUND; INVALID_ARGUMENT; FAILED_PRECONDITION",
        "the rollout the refused calls aimed at keeps serving (later calls "
        "succeed)");
    RecordReliability(
        "a status report with a bad device id or state; a watch without models",
        "INVALID_ARGUMENT", "the server keeps answering");
    RecordReliability("SIGTERM while a device watches",
                      "keepalives until then; the watch ends UNAVAILABLE at "
                      "once (not at the grace deadline)",
                      "weightcastd exits 0");
  }
}

TEST(FleetEndToEnd, StreamsPerClientAreCapped) {
  const std::string dir = FreshDir("fleet_streams");
  auto server = ServerProcess::Start(
      kServer, dir + "/data",
      {"--max-streams-per-client", "2", "--keepalive-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  std::atomic<bool> end{false};
  std::atomic<bool> open[2] = {false, false};
  std::vector<std::thread> watches;
  for (int i = 0; i < 2; ++i) {
    watches.emplace_back([&, i] {
      WatchOptions watch{absl::StrFormat("dev-%d", i), {}, {"m"}, "", {},
                         [&] { return end.load(); }};
      client
          ->Watch(
              watch, [](const AssignmentInfo&) {}, [&, i] { open[i] = true; })
          .IgnoreError();
    });
  }
  ASSERT_TRUE(Eventually([&] {
    return open[0].load() && open[1].load();
  }));  // each had a keepalive
  WatchOptions third{"dev-3", {}, {"m"}};
  const absl::Status refused =
      client->Watch(third, [](const AssignmentInfo&) {});
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_NE(refused.message().find("--max-streams-per-client"),
            absl::string_view::npos);
  end = true;
  for (auto& t : watches) t.join();
  // Slots come back when streams end: a pull goes through now.
  ASSERT_TRUE(
      client->Register({"m", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  EXPECT_TRUE(client->Pull({"m", "v1", {"lossless"}, ""}).ok());
  if (!HasFailure()) {
    RecordReliability(
        "a third concurrent stream from one client (--max-streams-per-client "
        "2)",
        "RESOURCE_EXHAUSTED naming the flag",
        "the two open watches keep running; later calls succeed");
  }
}

// One Watch stream on gRPC's callback client API (no thread of its own).
class CallbackWatch final : public grpc::ClientReadReactor<v1::WatchEvent> {
 public:
  CallbackWatch(v1::Distribution::Stub* stub, const std::string& device_id) {
    request_.set_device_id(device_id);
    request_.add_models("m");
    v1::InstalledModel* held = request_.add_installed();
    held->set_model("m");
    held->set_version("v1");
    stub->async()->Watch(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (event_.has_assignment()) {
      absl::MutexLock lock(&mu_);
      assigned_ = event_.assignment().version();
    }
    StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  void Cancel() { context_.TryCancel(); }
  std::string assigned() {
    absl::MutexLock lock(&mu_);
    return assigned_;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  grpc::ClientContext context_;
  v1::WatchRequest request_;
  v1::WatchEvent event_;
  absl::Mutex mu_;
  std::string assigned_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

TEST(FleetEndToEnd, WatchStreamsTakeNoServerThreadEachAndEndWithTheirClient) {
  constexpr int kStreams = 300;
  const std::string dir = FreshDir("fleet_callback_watch");
  auto server = ServerProcess::Start(kServer, dir + "/data",
                                     {"--max-streams-per-client", "400"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto admin = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      admin->Register({"m", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  ASSERT_TRUE(
      admin->Register({"m", "v2", kFixtures + "/training.pt", "lossless"})
          .ok());
  ASSERT_TRUE(admin->StartRollout("m", "v1", 100, {}).ok());
  const uint64_t threads_before = ProcessStatusKb(server->pid(), "Threads:");
  auto channel = grpc::CreateChannel(server->address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Distribution::NewStub(channel);
  std::vector<std::unique_ptr<CallbackWatch>> watches;
  for (int i = 0; i < kStreams; ++i) {
    watches.push_back(std::make_unique<CallbackWatch>(
        stub.get(), absl::StrFormat("cb-%d", i)));
  }
  ASSERT_TRUE(Eventually(
      [&] { return admin->GetRollout("m").value().subscribers == kStreams; }));
  // A thread per stream would add 300; gRPC's pools and ours stay put.
  const uint64_t threads_open = ProcessStatusKb(server->pid(), "Threads:");
  EXPECT_LT(threads_open, threads_before + 32)
      << threads_before << " -> " << threads_open;

  ASSERT_TRUE(admin->StartRollout("m", "v2", 100, {}).ok());
  EXPECT_TRUE(Eventually([&] {
    for (auto& w : watches) {
      if (w->assigned() != "v2") return false;
    }
    return true;
  })) << "every stream has its assignment";

  for (auto& w : watches) w->Cancel();
  EXPECT_TRUE(Eventually([&] {
    for (auto& w : watches) {
      if (!w->done()) return false;
    }
    return true;
  }));
  // The server lets go of every subscription and stream slot.
  EXPECT_TRUE(Eventually(
      [&] { return admin->GetRollout("m").value().subscribers == 0; }));
  if (!HasFailure()) {
    RecordReliability(
        "300 Watch streams on one connection, a rollout, then every client "
        "cancels",
        "each stream got its assignment; the server's threads grew by fewer "
        "than 32",
        "every subscription was released (the rollout's subscribers back to "
        "0)");
  }
}

}  // namespace
}  // namespace weightcast
