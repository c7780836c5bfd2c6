#include "client/cli/fleet_commands.h"

#include <signal.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/agent/agent.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

std::atomic<bool> g_stop{false};

void OnStopSignal(int) { g_stop.store(true); }

std::vector<std::string> List(const std::string& text) {
  return absl::StrSplit(text, ',', absl::SkipEmpty());
}

void Print(const RolloutInfo& r, std::ostream& out) {
  out << absl::StrFormat(
      "%s: %s of %s to %.2f %% of devices%s (baseline: %s); %d devices "
      "watching\n",
      r.model, r.state, r.version, r.percent,
      r.groups.empty()
          ? ""
          : absl::StrCat(" and groups ", absl::StrJoin(r.groups, ",")),
      r.baseline_version.empty() ? "none" : r.baseline_version, r.subscribers);
  for (const RolloutInfo::Count& c : r.counts) {
    out << absl::StrFormat("  %-20s %-12s %d devices\n", c.version, c.state,
                           c.devices);
  }
}

absl::Status Rollout(const Args& args, Client& client, std::ostream& out) {
  const std::vector<std::string>& pos = args.positional();
  if (pos.size() < 2)
    return absl::InvalidArgumentError(
        "rollout start|set|pause|resume|rollback|status MODEL ...");
  const std::string& action = pos[0];
  const std::string& model = pos[1];
  double percent = -1;
  RETURN_IF_ERROR(args.Number("--percent", 0, &percent));
  if (percent > 100)
    return absl::InvalidArgumentError("--percent needs a number within 0..100");
  absl::StatusOr<RolloutInfo> rollout;
  if (action == "start") {
    if (pos.size() != 3)
      return absl::InvalidArgumentError("rollout start MODEL VERSION");
    rollout = client.StartRollout(model, pos[2], std::max(percent, 0.0),
                                  List(args.Get("--groups")));
  } else if (action == "set") {
    RolloutUpdate update;
    update.percent = percent;
    if (args.Has("--groups")) update.groups = List(args.Get("--groups"));
    rollout = client.UpdateRollout(model, update);
  } else if (action == "pause" || action == "resume") {
    RolloutUpdate update;
    update.paused = action == "pause";
    rollout = client.UpdateRollout(model, update);
  } else if (action == "rollback") {
    rollout = client.RollbackRollout(model);
  } else if (action == "status") {
    rollout = client.GetRollout(model);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown rollout action '", action, "'"));
  }
  if (!rollout.ok()) return rollout.status();
  Print(*rollout, out);
  return absl::OkStatus();
}

absl::Status RunAgent(const Args& args, Client& client, std::ostream& out) {
  auto flag = [&](absl::string_view name) { return args.Get(name); };
  AgentOptions options{flag("--device-id"), flag("--dir"),
                       List(flag("--models")), List(args.Get("--groups"))};
  options.tier.name = flag("--tier");
  options.int8_output = args.Has("--int8");
  options.coarse_tier = flag("--progressive");
  RETURN_IF_ERROR(args.Int("--max-bytes", uint64_t{0}, ~uint64_t{0},
                           &options.tier.max_bytes));
  signal(SIGINT, OnStopSignal);
  signal(SIGTERM, OnStopSignal);
  out << "agent " << options.device_id << ": keeping "
      << absl::StrJoin(options.models, ",") << " in " << options.dir
      << std::endl;
  Agent agent(&client, options);
  return agent.Run(g_stop);
}

}  // namespace

bool IsFleetCommand(const std::string& command) {
  return command == "rollout" || command == "agent";
}

absl::Status RunFleetCommand(const std::string& command, const Args& args,
                             Client& client, std::ostream& out) {
  if (command == "agent") return RunAgent(args, client, out);
  return Rollout(args, client, out);
}

}  // namespace weightcast
