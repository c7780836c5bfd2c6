// The device agent: keeps the models assigned to this device installed in a
// directory. It watches the server (Watch), pulls each assigned version with
// the SDK at its tier (verified layer by layer), switches DIR/<model>/current
// atomically (a symlink renamed over the old one), keeps the version before as
// DIR/<model>/previous (a rollback to it needs no download), reports every step
// (ReportStatus), and reconnects with backoff, telling the server what it holds
// so it catches up on what it missed. With a coarse tier set (progressive), a
// version is installed twice in turn: the coarse model as soon as it is
// verified, then the refined one over it. Layout:
//   DIR/<model>/versions/<version>/model.pt   float32 state_dict (or int8,
//   --int8) DIR/<model>/versions/<version>/tier       the tier it was pulled at
//   DIR/<model>/versions/<version>/refining   present while only the coarse
//   model is installed DIR/<model>/current  -> versions/<version>
//   DIR/<model>/previous -> versions/<version>
// One Agent per device; Run() on one thread; stats() from any.
#ifndef WEIGHTCAST_CLIENT_AGENT_AGENT_H_
#define WEIGHTCAST_CLIENT_AGENT_AGENT_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/sdk/client.h"

namespace weightcast {

struct AgentOptions {
  std::string device_id;
  std::string dir;
  std::vector<std::string> models;
  std::vector<std::string> groups;
  TierSelector tier;  // when the server names no tier
  bool int8_output = false;
  // Progressive pulls (PullOptions::coarse_tier): install this tier (qNN or
  // budget-N) first, then the refined model. Empty: one install per version.
  std::string coarse_tier;
  absl::Duration min_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
};

struct AgentStats {
  int installs = 0;   // versions switched to
  int downloads = 0;  // of which pulled (a switch back to `previous` is not)
  int failures = 0;
  int reconnects = 0;
  int delta_layers =
      0;  // layers pulled as deltas on layers of a version held before
  int coarse_installs = 0;  // coarse models installed ahead of their refinement
                            // (also in installs)
  bool connected = false;   // a watch is open
};

class Agent {
 public:
  Agent(Client* client, AgentOptions options)
      : client_(client), options_(std::move(options)) {}

  // Runs until `stop` is set (OK) or the options are unusable
  // (INVALID_ARGUMENT).
  absl::Status Run(const std::atomic<bool>& stop);

  // The version DIR/<model>/current points at ("" when none).
  static std::string Installed(const std::string& dir,
                               const std::string& model);

  AgentStats stats();

 private:
  absl::Status Install(const AssignmentInfo& assignment,
                       const std::atomic<bool>& stop);
  // Points DIR/<model>/current at `version` (and previous at `current` when it
  // is another). Idempotent: a refined install repeats what its coarse install
  // did.
  static absl::Status SwitchTo(const std::string& model_dir,
                               const std::string& version,
                               const std::string& current);
  void CountFailure();
  void Report(const AssignmentInfo& assignment, const std::string& state,
              const std::string& reason, uint64_t bytes, double seconds);

  Client* const client_;
  const AgentOptions options_;
  absl::Mutex mu_;
  AgentStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_AGENT_AGENT_H_
