// Runs the real weightcastd binary for end-to-end tests: on 127.0.0.1 with a
// free port, a data directory the test chooses, stopped with SIGTERM (or killed
// with SIGKILL) on demand and always reaped; killed by the kernel if the thread
// that started it dies (an aborted test included). Not thread-safe; one per
// test.
#ifndef WEIGHTCAST_TESTS_E2E_SERVER_PROCESS_H_
#define WEIGHTCAST_TESTS_E2E_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace weightcast {

class ServerProcess {
 public:
  // Starts `binary` with --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --data-dir
  // DIR and `extra` flags, and waits (at most 30 s) for its "listening on"
  // line. --no-encode-on-register unless `extra` holds --encode-on-register
  // (tests count encodings and time cold pulls). `max_file_bytes` (0: none)
  // caps the size of any file the server writes (RLIMIT_FSIZE): a full disk, as
  // far as that server can tell.
  static absl::StatusOr<ServerProcess> Start(
      const std::string& binary, const std::string& data_dir,
      const std::vector<std::string>& extra = {}, uint64_t max_file_bytes = 0);
  ServerProcess(ServerProcess&& other) noexcept;
  ServerProcess& operator=(
      ServerProcess&& other) noexcept;  // kills the process it held
  ~ServerProcess();

  const std::string& address() const { return address_; }
  const std::string& metrics_url() const {
    return metrics_url_;
  }  // http://127.0.0.1:PORT/metrics
  pid_t pid() const { return pid_; }
  // SIGTERM and wait: returns the exit status.
  int Stop();
  // SIGTERM without waiting (Stop() then waits).
  void Terminate();
  // SIGKILL and wait.
  void Kill();

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::string metrics_url_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (for a server that must
// keep its port across a restart).
int FreeLoopbackPort();

// A "kB" field of /proc/PID/status ("VmRSS:", "VmHWM:"); "Threads:" gives a
// count. 0 if absent.
uint64_t ProcessStatusKb(pid_t pid, const char* field);

// GET `url` (http://HOST:PORT/PATH on loopback); the body, or an error.
absl::StatusOr<std::string> HttpGet(const std::string& url);

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_E2E_SERVER_PROCESS_H_
