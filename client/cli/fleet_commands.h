// The `weightcast` commands of fleet push: `rollout` (operators) and `agent`
// (devices).
#ifndef WEIGHTCAST_CLIENT_CLI_FLEET_COMMANDS_H_
#define WEIGHTCAST_CLIENT_CLI_FLEET_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/sdk/client.h"
#include "common/base/args.h"

namespace weightcast {

inline constexpr char kFleetUsage[] =
    R"(  rollout start MODEL VERSION [--percent P] [--groups G1,G2]   roll VERSION out to P % (default 0)
                                              of devices and to the groups named
  rollout set MODEL [--percent P] [--groups G1,G2]   raise (or lower) it, change its groups
  rollout pause|resume|rollback|status MODEL
  agent --device-id ID --dir DIR --models M1,M2 [--groups G1,G2] [--tier NAME | --max-bytes N]
       [--int8] [--progressive COARSE]   keep the models assigned to this device installed in DIR
                  (until SIGINT/SIGTERM); layers of installed versions are kept in DIR/MODEL/bases
                  for delta pulls; --progressive installs tier COARSE (qNN or budget-N) first,
                  then the assigned tier refined from it
)";

// True for the commands this file runs.
bool IsFleetCommand(const std::string& command);

absl::Status RunFleetCommand(const std::string& command, const Args& args,
                             Client& client, std::ostream& out);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_CLI_FLEET_COMMANDS_H_
