// What an outside probe of weightcastd found, tried again against the real
// server on 127.0.0.1 with raw gRPC calls: tier names that make work, stream
// quotas that a made-up header escapes, device reports that store anything,
// errors that carry server paths or echo input whole, reflection without a
// switch; and the CLI against a server that sends terminal escapes.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli.h"
#include "client/sdk/client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "tests/e2e/server_process.h"
#include "tests/testing/fresh_dir.h"
#include "tests/testing/paths.h"
#include "tests/testing/reflection.h"
#include "tests/testing/reliability_log.h"
#include "weightcast/v1/weightcast.grpc.pb.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kServer = BuildDir() + "/server/weightcastd";
const std::string kFixtures = FixtureDir();

struct Raw {  // generated stubs: requests no SDK would send
  explicit Raw(const std::string& address)
      : channel(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        admin(v1::Admin::NewStub(channel)),
        distribution(v1::Distribution::NewStub(channel)),
        health(grpc::health::v1::Health::NewStub(channel)) {}
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Admin::Stub> admin;
  std::unique_ptr<v1::Distribution::Stub> distribution;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
};

// A call context with a deadline, carrying `authorization` when given.
std::unique_ptr<grpc::ClientContext> Call(
    const std::string& authorization = "") {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(60));
  if (!authorization.empty())
    context->AddMetadata("authorization", authorization);
  return context;
}

grpc::Status GetManifest(Raw& raw, const std::string& token,
                         const std::string& model, const std::string& tier) {
  v1::GetManifestRequest request;
  request.set_model(model);
  request.set_version("v1");
  request.mutable_tier()->set_name(tier);
  v1::Manifest manifest;
  return raw.distribution->GetManifest(
      Call(token.empty() ? "" : "Bearer " + token).get(), request, &manifest);
}

std::vector<std::string> TierNames(Client& client, const std::string& model) {
  std::vector<std::string> names;
  const ModelInfo info = client.Describe(model, "v1").value();
  for (const TierSummary& tier : info.tiers) names.push_back(tier.name);
  return names;
}

size_t LongestLine(const std::string& text) {
  size_t longest = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n'))
    longest = std::max(longest, line.size());
  return longest;
}

std::unique_ptr<Client> As(const std::string& address,
                           const std::string& token) {
  ConnectOptions options{address, absl::Seconds(60)};
  options.token = token;
  return Client::Connect(options).value();
}

TEST(ProbeEndToEnd,
     TierNamesAreCanonicalAndADeviceGetsOnlyWhatTheLadderOffers) {
  const std::string dir = FreshDir("probe_tiers");
  {
    std::ofstream tokens(dir + "/tokens");
    tokens << "admin " << TokenHash("admin-secret") << "\ndevice "
           << TokenHash("device-secret") << " devices=dev-*\n";
  }
  auto server =
      ServerProcess::Start(kServer, dir + "/data",
                           {"--tokens", dir + "/tokens", "--max-tiers", "6"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto admin = As(server->address(), "admin-secret");
  ASSERT_TRUE(
      admin->Register({"mlp", "v1", kFixtures + "/mlp.pt", "q22,q27,q37"})
          .ok());
  Raw raw(server->address());
  const std::string metrics_before = HttpGet(server->metrics_url()).value();

  // Other spellings of a tier name the canonical one; nothing is added for
  // them.
  for (const auto& [asked, canonical] :
       {std::make_pair("q027", "q27"), std::make_pair("q27+q0022", "q27+q22"),
        std::make_pair("budget-1000k", "budget-1m")}) {
    const grpc::Status status = GetManifest(raw, "device-secret", "mlp", asked);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << asked;
    EXPECT_THAT(status.error_message(),
                HasSubstr(absl::StrCat("spelled '", canonical, "'")))
        << asked;
  }
  const std::string huge = "budget-" + std::string(100000, '0') + "1";
  const grpc::Status long_name = GetManifest(raw, "device-secret", "mlp", huge);
  EXPECT_EQ(long_name.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(long_name.error_message().size(), 400u);
  // A device may not make the server encode a refinement the ladder does not
  // offer...
  const grpc::Status off_ladder =
      GetManifest(raw, "device-secret", "mlp", "q37+q12");
  EXPECT_EQ(off_ladder.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(off_ladder.error_message(), HasSubstr("not offered"));
  EXPECT_EQ(TierNames(*admin, "mlp"),
            (std::vector<std::string>{"q22", "q27", "q37"}));
  // ...but gets one between two ladder tiers.
  const grpc::Status between =
      GetManifest(raw, "device-secret", "mlp", "q37+q22");
  EXPECT_TRUE(between.ok()) << between.error_message();
  // An operator may add others, up to --max-tiers.
  EXPECT_TRUE(admin->Warm("mlp", "v1", {"q37+q12", "q37+q13"}).ok());
  const absl::Status capped = admin->Warm("mlp", "v1", {"q37+q14"});
  EXPECT_EQ(capped.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(capped.message()), HasSubstr("--max-tiers"));
  const grpc::Status capped_pull =
      GetManifest(raw, "admin-secret", "mlp", "q32+q12");
  EXPECT_EQ(capped_pull.error_code(),
            grpc::StatusCode::NOT_FOUND);  // q32 is not in the ladder
  EXPECT_EQ(TierNames(*admin, "mlp").size(), 6u);
  const absl::Status long_ladder =
      admin
          ->Register({"mlp", "v2", kFixtures + "/mlp.pt",
                      "q20,q21,q22,q23,q24,q25,q26"})
          .status();
  EXPECT_EQ(long_ladder.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(long_ladder.message()), HasSubstr("--max-tiers"));
  // Metric labels carry only tiers the server knows.
  const std::string metrics_after = HttpGet(server->metrics_url()).value();
  EXPECT_THAT(metrics_after, Not(HasSubstr("q027")));
  EXPECT_THAT(metrics_after, Not(HasSubstr("budget-000")));
  EXPECT_LT(LongestLine(metrics_after), 300u);
  EXPECT_LT(metrics_after.size(), metrics_before.size() + 20000);
  if (!HasFailure()) {
    RecordReliability(
        "a device token asking GetManifest for q027, q27+q0022, budget-1000k, "
        "a 100,000-character "
        "tier name, and a refinement (q37+q12) its ladder (q22,q27,q37) does "
        "not offer",
        "INVALID_ARGUMENT naming the canonical spelling ('q27', 'q27+q22', "
        "'budget-1m'); INVALID_ARGUMENT "
        "in under 400 bytes; NOT_FOUND \"not offered\"",
        "no tier added (3 tiers); /metrics has no label the server did not "
        "create, no line over 300 "
        "bytes; q37+q22 (between ladder tiers) pulls");
    RecordReliability(
        "an operator adding refinements past --max-tiers 6; a 7-tier ladder",
        "RESOURCE_EXHAUSTED naming --max-tiers; INVALID_ARGUMENT naming "
        "--max-tiers",
        "the version keeps its 6 tiers; no version added");
  }
}

TEST(ProbeEndToEnd, StreamQuotaCountsVerifiedClientsAndHealthWatches) {
  const std::string dir = FreshDir("probe_streams");
  auto server = ServerProcess::Start(
      kServer, dir + "/data",
      {"--max-streams-per-client", "2", "--keepalive-seconds", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  Raw raw(server->address());
  v1::WatchRequest watch;
  watch.set_device_id("dev-1");
  watch.add_models("mlp");
  // Two watches with made-up authorization headers: tokens are off, so both are
  // this address.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::WatchEvent>>> open;
  for (const char* header : {"Bearer made-up-1", "Bearer made-up-2"}) {
    contexts.push_back(Call(header));
    open.push_back(raw.distribution->Watch(contexts.back().get(), watch));
    v1::WatchEvent event;
    ASSERT_TRUE(open.back()->Read(&event))
        << header;  // a keepalive: the server holds the stream
  }
  auto third_context = Call("Bearer made-up-3");
  auto third = raw.distribution->Watch(third_context.get(), watch);
  v1::WatchEvent event;
  EXPECT_FALSE(third->Read(&event));
  const grpc::Status refused = third->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max-streams-per-client"));
  // A health Watch is a stream of the same client.
  grpc::health::v1::HealthCheckRequest health_request;
  grpc::health::v1::HealthCheckResponse health;
  auto health_context = Call();
  auto health_watch = raw.health->Watch(health_context.get(), health_request);
  EXPECT_FALSE(health_watch->Read(&health));
  EXPECT_EQ(health_watch->Finish().error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Check is not a stream; and once a watch ends, a health Watch gets its slot
  // and SERVING.
  EXPECT_TRUE(raw.health->Check(Call().get(), health_request, &health).ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  contexts[0]->TryCancel();
  open[0]->Finish().IgnoreError();
  bool watched = false;
  for (int attempt = 0; attempt < 50 && !watched;
       ++attempt) {  // the server frees the slot when it sees the cancel
    auto again_context = Call();
    auto again = raw.health->Watch(again_context.get(), health_request);
    watched = again->Read(&health);
    again_context->TryCancel();
    again->Finish().IgnoreError();
    if (!watched) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(watched);
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  contexts[1]->TryCancel();
  open[1]->Finish().IgnoreError();
  if (!HasFailure()) {
    RecordReliability(
        "a third Watch with a made-up authorization header (tokens off, "
        "--max-streams-per-client 2), "
        "and a grpc.health.v1 Watch, while two watches are open",
        "RESOURCE_EXHAUSTED naming --max-streams-per-client for both (the "
        "client is its address)",
        "the two watches keep receiving; health Check answers SERVING; a "
        "health Watch is served once "
        "a watch ends");
  }
}

TEST(ProbeEndToEnd, DeviceReportsHoldNamesOfKnownVersionsAndBoundedReasons) {
  const std::string dir = FreshDir("probe_reports");
  auto server = ServerProcess::Start(kServer, dir + "/data");
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  ASSERT_TRUE(
      client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"}).ok());
  ASSERT_TRUE(client->StartRollout("mlp", "v1", 100, {}).ok());
  Raw raw(server->address());
  const auto report = [&](const std::string& model, const std::string& version,
                          const std::string& tier, const std::string& reason) {
    v1::DeviceStatus status;
    status.set_device_id("dev-1");
    status.set_model(model);
    status.set_version(version);
    status.set_tier(tier);
    status.set_state(v1::DeviceStatus::FAILED);
    status.set_reason(reason);
    v1::ReportStatusResponse response;
    return raw.distribution->ReportStatus(Call().get(), status, &response);
  };
  const uint64_t db_before = std::filesystem::file_size(dir + "/data/fleet.db");
  const std::string escape = "\x1b[2J\x1b]0;owned\x07";
  for (const auto& [model, version, tier] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"../../etc", "v1", "lossless"},
           {"mlp", escape, "lossless"},
           {"mlp", std::string("v1\0x", 4), "lossless"},
           {"mlp", "v1", "q022"},
           {"mlp", "v1", std::string(5000, 'q')}}) {
    const grpc::Status status = report(model, version, tier, "");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << version;
    EXPECT_THAT(status.error_message(), Not(HasSubstr("\x1b")));
    EXPECT_LT(status.error_message().size(), 400u);
  }
  for (int i = 0; i < 3; ++i) {
    const grpc::Status status =
        report("mlp", "v1", "lossless", std::string(7 << 20, 'r'));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("reason"));
  }
  EXPECT_EQ(report("mlp", "v9", "lossless", "").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(report("nope", "v1", "lossless", "").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_LT(std::filesystem::file_size(dir + "/data/fleet.db"),
            db_before + (64 << 10));
  EXPECT_EQ(client->GetRollout("mlp").value().Devices("v1", "FAILED"), 0u);
  // A real report with an unruly reason is kept, its control characters
  // escaped.
  EXPECT_TRUE(
      report("mlp", "v1", "lossless", "decode failed\n\x1b[31mred").ok());
  EXPECT_EQ(client->GetRollout("mlp").value().Devices("v1", "FAILED"), 1u);
  if (!HasFailure()) {
    RecordReliability(
        "ReportStatus with model '../../etc', a version holding ESC sequences "
        "or NUL, tier 'q022' or "
        "5,000 characters; three 7 MiB reasons; an unknown model or version",
        "INVALID_ARGUMENT (under 400 bytes, no ESC byte echoed); "
        "INVALID_ARGUMENT naming the reason; "
        "NOT_FOUND",
        "fleet.db grew under 64 KiB; no report stored; a genuine report is "
        "then stored");
  }
}

TEST(ProbeEndToEnd, ErrorsNameTheUploadNotServerPathsAndEchoInputBoundedly) {
  const std::string dir = FreshDir("probe_errors");
  auto server = ServerProcess::Start(kServer, dir + "/data");
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = Client::Connect({server->address()}).value();
  const std::string data_dir =
      std::filesystem::canonical(dir + "/data").string();
  for (const char* fixture :
       {"not_a_checkpoint.pt", "truncated.pt", "short_storage.pt"}) {
    const absl::Status status =
        client->Register({"mlp", "v1", kFixtures + "/" + fixture, "lossless"})
            .status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << fixture;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("the uploaded checkpoint"))
        << fixture;
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr(data_dir)))
        << fixture;
    EXPECT_THAT(std::string(status.message()), Not(HasSubstr("/tmp/")))
        << fixture;
  }
  const std::string huge(7000000, 'm');
  const absl::Status named =
      client->Register({huge, "v1", kFixtures + "/mlp.pt", "lossless"})
          .status();
  EXPECT_EQ(named.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(named.message().size(), 300u);
  const absl::Status described = client->Describe(huge + "/", "v1").status();
  EXPECT_EQ(described.code(), absl::StatusCode::kNotFound);
  EXPECT_LT(described.message().size(), 400u);
  EXPECT_THAT(std::string(described.message()), HasSubstr("7000001 bytes"));
  ASSERT_TRUE(client->Register({"mlp", "v1", kFixtures + "/mlp.pt", "lossless"})
                  .ok());  // nothing was in the way
  if (!HasFailure()) {
    RecordReliability(
        "a text file, a truncated zip and a checkpoint with a short storage "
        "record as uploads",
        "INVALID_ARGUMENT naming \"the uploaded checkpoint\", never a server "
        "path",
        "the same name then registers");
    RecordReliability(
        "a 7,000,000-character model name in RegisterModel and DescribeModel",
        "INVALID_ARGUMENT / NOT_FOUND under 400 bytes, the name cut at 200 "
        "bytes and its length given",
        "nothing stored");
  }
}

TEST(ProbeEndToEnd, ReflectionCanBeTurnedOff) {
  const std::string dir = FreshDir("probe_reflection");
  auto server =
      ServerProcess::Start(kServer, dir + "/data", {"--no-reflection"});
  ASSERT_TRUE(server.ok()) << server.status();
  Raw raw(server->address());
  EXPECT_EQ(ReflectionListServices(raw.channel), "");
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse health;
  EXPECT_TRUE(raw.health->Check(Call().get(), request, &health).ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  request.set_service("weightcast.v1.Nope");
  EXPECT_EQ(raw.health->Check(Call().get(), request, &health).error_code(),
            grpc::StatusCode::NOT_FOUND);
  if (!HasFailure()) {
    RecordReliability("server reflection asked of weightcastd --no-reflection",
                      "no reflection service (empty answer)",
                      "health Check still answers SERVING");
  }
}

// A server that answers with terminal escape sequences in every string it can.
class HostileAdmin final : public v1::Admin::Service {
 public:
  grpc::Status GetRollout(grpc::ServerContext*, const v1::GetRolloutRequest*,
                          v1::Rollout* response) override {
    response->set_model("m\x1b]0;owned\x07");
    response->set_version("\x1b[2J\x1b[H");
    response->set_baseline_version("v0\r\x1b[31m");
    return grpc::Status::OK;
  }
  grpc::Status DescribeModel(grpc::ServerContext*,
                             const v1::DescribeModelRequest*,
                             v1::ModelVersion*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no model \x1b[2J\x9b"
                        "31m\xc2\x9b"
                        "31m");
  }
};

bool HasControlCharacters(const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) return true;
    if (c == 0xc2 && i + 1 < text.size() &&
        static_cast<unsigned char>(text[i + 1]) < 0xa0)
      return true;  // C1
    if (c >= 0x80 && c < 0xc0 &&
        (i == 0 || static_cast<unsigned char>(text[i - 1]) < 0x80))
      return true;
  }
  return false;
}

TEST(ProbeEndToEnd, TheCliPrintsNoControlCharactersAServerSends) {
  HostileAdmin hostile;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&hostile);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::ostringstream out, err;
  EXPECT_EQ(RunCli({"--server", address, "rollout", "status", "m"}, out, err,
                   /*terminal=*/false),
            0)
      << err.str();
  EXPECT_FALSE(HasControlCharacters(out.str())) << out.str();
  EXPECT_THAT(out.str(), HasSubstr("\\x1b[2J"));  // shown, escaped
  std::ostringstream out2, err2;
  EXPECT_NE(RunCli({"--server", address, "describe", "m"}, out2, err2,
                   /*terminal=*/false),
            0);
  EXPECT_FALSE(HasControlCharacters(err2.str())) << err2.str();
  EXPECT_THAT(err2.str(), HasSubstr("no model"));
  server->Shutdown();
  if (!HasFailure()) {
    RecordReliability(
        "a server answering `rollout status` and `describe` with ESC/OSC/C1 "
        "sequences in names and "
        "messages",
        "the CLI prints them as \\xNN escapes; no control character reaches "
        "the terminal",
        "the CLI exits normally (0 for the status, the NOT_FOUND code for "
        "describe)");
  }
}

}  // namespace
}  // namespace weightcast
