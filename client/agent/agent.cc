#include "client/agent/agent.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/sdk/base_store.h"
#include "common/base/names.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;

// Points `link` at `target` atomically: a new symlink renamed over the old one.
absl::Status Relink(const fs::path& link, const fs::path& target) {
  const fs::path temp = link.string() + ".new";
  std::error_code error;
  fs::remove(temp, error);
  fs::create_symlink(target, temp, error);
  if (!error) fs::rename(temp, link, error);
  if (error)
    return absl::InternalError(
        absl::StrCat(link.string(), ": ", error.message()));
  return absl::OkStatus();
}

std::string ReadSmallFile(const fs::path& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  return text;
}

}  // namespace

std::string Agent::Installed(const std::string& dir, const std::string& model) {
  std::error_code error;
  const fs::path target =
      fs::read_symlink(fs::path(dir) / model / "current", error);
  return error ? "" : target.filename().string();
}

AgentStats Agent::stats() {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Agent::Report(const AssignmentInfo& a, const std::string& state,
                   const std::string& reason, uint64_t bytes, double seconds) {
  // Best effort: a report lost with the connection is made again when the watch
  // comes back. The server keeps at most 1 KiB of reason.
  constexpr size_t kMaxReason = 1024;
  client_
      ->ReportStatus({options_.device_id, a.model, a.version, a.tier, state,
                      reason.substr(0, kMaxReason), bytes, seconds})
      .IgnoreError();
}

void Agent::CountFailure() {
  absl::MutexLock lock(&mu_);
  ++stats_.failures;
}

absl::Status Agent::Install(const AssignmentInfo& a,
                            const std::atomic<bool>& stop) {
  // The model name and version label the server sends become paths: checked
  // as the server checks them first.
  if (absl::Status bad = CheckName("model name", a.model, kMaxLabelBytes);
      !bad.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ignored an assignment: ", bad.message()));
  }
  if (absl::Status bad = CheckName("version label", a.version, kMaxLabelBytes);
      !bad.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ignored an assignment: ", bad.message()));
  }
  if (std::find(options_.models.begin(), options_.models.end(), a.model) ==
      options_.models.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ignored an assignment of '", a.model,
                     "', a model this agent does not keep"));
  }
  const fs::path model_dir = fs::path(options_.dir) / a.model;
  const fs::path version_dir = model_dir / "versions" / a.version;
  const std::string current = Installed(options_.dir, a.model);
  AssignmentInfo done = a;
  const bool refining =
      fs::exists(version_dir / "refining");  // only its coarse model is here
  if (current == a.version && !refining) {
    done.tier = ReadSmallFile(version_dir / "tier");
    Report(done, "INSTALLED", "", 0, 0);
    return absl::OkStatus();
  }
  const auto start = std::chrono::steady_clock::now();
  uint64_t bytes = 0;
  int deltas = 0;
  std::string detail;  // the pull's warnings, for the operator's status view
  const bool have = fs::exists(version_dir / "model.pt") &&
                    fs::exists(version_dir / "tier") && !refining;
  if (have) {
    done.tier = ReadSmallFile(version_dir / "tier");
  } else {
    Report(a, "DOWNLOADING", "", 0, 0);
    std::error_code error;
    fs::create_directories(version_dir, error);
    PullOptions pull;
    pull.model = a.model;
    pull.version = a.version;
    pull.tier = options_.tier;
    if (!a.tier.empty()) pull.tier = TierSelector{a.tier};
    pull.output_path = (version_dir / "model.pt").string();
    pull.base_dir =
        (model_dir / "bases").string();  // deltas on the versions held
    pull.int8_output = options_.int8_output;
    pull.cancel = &stop;
    pull.coarse_tier = options_.coarse_tier;
    pull.coarse_output_path =
        pull.output_path;  // the refined model replaces it
    absl::Status coarse_installed;
    pull.on_coarse = [&](const CoarseModel& coarse) {
      std::ofstream(version_dir / "refining") << coarse.tier << "\n";
      std::ofstream(version_dir / "tier") << coarse.tier << "\n";
      coarse_installed = SwitchTo(model_dir.string(), a.version, current);
      if (!coarse_installed.ok()) return;
      {
        absl::MutexLock lock(&mu_);
        ++stats_.installs;
        ++stats_.coarse_installs;
      }
      AssignmentInfo usable = a;
      usable.tier = coarse.tier;
      Report(usable, "INSTALLED", "coarse; refining", coarse.bytes,
             coarse.seconds);
    };
    absl::StatusOr<PullResult> pulled =
        error ? absl::InternalError(error.message()) : client_->Pull(pull);
    if (pulled.ok() && !coarse_installed.ok()) pulled = coarse_installed;
    if (!pulled.ok()) {
      CountFailure();
      Report(a, "FAILED", std::string(pulled.status().message()), 0, 0);
      return pulled.status();
    }
    done.tier = pulled->tier;
    bytes = pulled->bytes;
    deltas = pulled->delta_layers;
    detail = absl::StrJoin(pulled->warnings, "; ");
    std::ofstream(version_dir / "tier") << pulled->tier << "\n";
    std::ofstream needed(version_dir / "bases");
    for (const std::string& sha : pulled->bases_needed) needed << sha << "\n";
    fs::remove(version_dir / "refining", error);
  }
  absl::Status switched = SwitchTo(model_dir.string(), a.version, current);
  if (!switched.ok()) {
    CountFailure();
    Report(done, "FAILED", std::string(switched.message()), bytes, 0);
    return switched;
  }
  // Keep current and previous only, and the base layers they need.
  std::error_code error;
  for (const auto& entry :
       fs::directory_iterator(model_dir / "versions", error)) {
    const std::string name = entry.path().filename().string();
    if (name != a.version && name != current)
      fs::remove_all(entry.path(), error);
  }
  std::vector<std::string> needed;
  for (const fs::path& kept : {version_dir, model_dir / "versions" / current}) {
    std::ifstream in(kept / "bases");
    for (std::string sha; std::getline(in, sha);) needed.push_back(sha);
  }
  BaseStore((model_dir / "bases").string()).Prune(needed);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  {  // counted before the report: whoever sees the report sees the counts
    absl::MutexLock lock(&mu_);
    ++stats_.installs;
    stats_.downloads += have ? 0 : 1;
    stats_.delta_layers += deltas;
  }
  Report(done, "INSTALLED", detail, bytes, seconds);
  return absl::OkStatus();
}

absl::Status Agent::SwitchTo(const std::string& model_dir,
                             const std::string& version,
                             const std::string& current) {
  const fs::path dir(model_dir);
  RETURN_IF_ERROR(Relink(dir / "current", fs::path("versions") / version));
  if (!current.empty() && current != version)
    RETURN_IF_ERROR(Relink(dir / "previous", fs::path("versions") / current));
  return absl::OkStatus();
}

absl::Status Agent::Run(const std::atomic<bool>& stop) {
  if (options_.device_id.empty() || options_.dir.empty() ||
      options_.models.empty()) {
    return absl::InvalidArgumentError(
        "an agent needs a device id, a directory and at least one model");
  }
  for (const std::string& model : options_.models) {
    RETURN_IF_ERROR(CheckName("model name", model, kMaxLabelBytes));
  }
  absl::Duration backoff = options_.min_backoff;
  while (!stop.load()) {
    // A failed install ends the watch: the next one (after the backoff) is
    // assigned it again.
    std::atomic<bool> failed{false};
    WatchOptions watch{options_.device_id,
                       options_.groups,
                       options_.models,
                       options_.tier.name,
                       {},
                       [&] { return stop.load() || failed.load(); }};
    for (const std::string& model : options_.models) {
      const std::string version = Installed(options_.dir, model);
      if (!version.empty()) watch.installed.emplace_back(model, version);
    }
    bool heard = false;
    auto connected = [&] {
      if (heard) return;
      heard = true;
      backoff =
          options_
              .min_backoff;  // the server answered: start over with short waits
      absl::MutexLock lock(&mu_);
      stats_.connected = true;
    };
    // However the watch ended (server gone, stream cut, a failed install),
    // watch again after the backoff; only `stop` ends the loop.
    client_
        ->Watch(
            watch,
            [&](const AssignmentInfo& a) {
              connected();
              if (!Install(a, stop).ok())
                failed.store(true);  // reported to the server
            },
            connected)
        .IgnoreError();
    {
      absl::MutexLock lock(&mu_);
      stats_.connected = false;
      if (!stop.load()) ++stats_.reconnects;
    }
    // Sleep the backoff in short steps so that stop is honoured at once.
    const auto until =
        std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(backoff);
    while (!stop.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  return absl::OkStatus();
}

}  // namespace weightcast
