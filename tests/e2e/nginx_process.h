// Runs a real nginx for end-to-end tests and benchmarks: a caching reverse
// proxy (proxy_cache, proxy_cache_lock) in front of weightcastd's blob
// listener, on 127.0.0.1, with a config, cache, pid file and logs generated in
// a directory the caller chooses. One process (master_process off), killed by
// the kernel if the thread that started it dies, always stopped and reaped by
// the destructor. Not thread-safe, except Stop(), which may be called from any
// one thread while another reads the log.
#ifndef WEIGHTCAST_TESTS_E2E_NGINX_PROCESS_H_
#define WEIGHTCAST_TESTS_E2E_NGINX_PROCESS_H_

#include <sys/types.h>

#include <atomic>
#include <string>

#include "absl/status/statusor.h"

namespace weightcast {

class NginxProcess {
 public:
  // nginx on 127.0.0.1:`port` caching GET /v1/blobs/ from
  // 127.0.0.1:`upstream_port`; waits (at most 10 s) until it answers.
  // `limit_rate` > 0: nginx sends each response at most that many bytes per
  // second (so that a test can stop it while a blob is still unsent, not
  // already sitting in loopback socket buffers).
  static absl::StatusOr<NginxProcess> Start(const std::string& dir, int port,
                                            int upstream_port,
                                            int64_t limit_rate = 0);
  NginxProcess(NginxProcess&& other) noexcept;
  NginxProcess& operator=(NginxProcess&&) = delete;
  ~NginxProcess();

  int port() const { return port_; }
  std::string url() const;                   // http://127.0.0.1:PORT
  pid_t pid() const { return pid_.load(); }  // -1 once stopped
  // SIGTERM (nginx's fast shutdown: open connections are closed) and wait.
  void Stop();

  // From the access log: requests answered, and those nginx sent on to
  // weightcastd (a cache miss, or a request that was not cached).
  struct LogCounts {
    int requests = 0;
    int origin_requests = 0;
    int hits = 0;   // $upstream_cache_status HIT
    int blobs = 0;  // distinct blob paths requested
  };
  LogCounts ReadLog() const;

 private:
  NginxProcess() = default;
  std::atomic<pid_t> pid_{-1};
  int port_ = 0;
  std::string dir_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_E2E_NGINX_PROCESS_H_
