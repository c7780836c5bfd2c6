// The `weightcast` command line: register, ls, describe, tiers, pull, warm, rm
// against a server. RunCli returns the process exit code; main() only forwards
// argv. Output goes to `out`, diagnostics to `err`.
#ifndef WEIGHTCAST_CLIENT_CLI_CLI_H_
#define WEIGHTCAST_CLIENT_CLI_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace weightcast {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitNetwork = 4;
inline constexpr int kExitVerification = 5;

int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, bool terminal);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_CLI_CLI_H_
