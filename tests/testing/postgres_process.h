// Runs a real PostgreSQL server for tests: initdb into a fresh directory under
// /tmp, then `postgres` itself (no daemon: the kernel kills it if the thread
// that started it dies) on a free 127.0.0.1 port, trust authentication for the
// user "weightcast", fsync off. When the test runs as root (CI), initdb and
// postgres refuse to: they run as the unprivileged "postgres" system user,
// which then owns the directory. Every wait is bounded (initdb 60 s, startup
// and shutdown 20 s each) and fails with the server's log. The destructor
// stops the server and removes the directory. Not thread-safe.
#ifndef WEIGHTCAST_TESTS_TESTING_POSTGRES_PROCESS_H_
#define WEIGHTCAST_TESTS_TESTING_POSTGRES_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace weightcast {

class PostgresProcess {
 public:
  static absl::StatusOr<std::unique_ptr<PostgresProcess>> Start();
  ~PostgresProcess();
  PostgresProcess(const PostgresProcess&) = delete;
  PostgresProcess& operator=(const PostgresProcess&) = delete;

  int port() const { return port_; }
  // A new, empty database; returns its postgresql:// URL.
  absl::StatusOr<std::string> CreateDatabase(const std::string& name);
  std::string Url(const std::string& database) const;

  // Fast shutdown (SIGINT: sessions are ended) and wait; Restart() starts the
  // server again on the same port and data.
  absl::Status Stop();
  absl::Status Restart();
  bool running() const { return pid_ > 0; }

 private:
  PostgresProcess() = default;
  absl::Status Launch();
  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
  uid_t uid_ = 0;  // the user the server runs as
  gid_t gid_ = 0;
};

// One server per test binary, started on first use and stopped at exit (a
// gtest Environment would do too; this keeps tests that never ask for it
// from paying for initdb).
absl::StatusOr<PostgresProcess*> SharedPostgres();

// Where a new, empty registry lives for a test parameterized by engine:
// `sqlite_path` for "sqlite", else a fresh database (database_prefix_N) on the
// shared PostgreSQL server.
absl::StatusOr<std::string> FreshRegistryLocation(
    const std::string& engine, const std::string& sqlite_path,
    const std::string& database_prefix);

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_POSTGRES_PROCESS_H_
