#include "tests/testing/postgres_process.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace weightcast {
namespace {

constexpr char kBin[] = "/usr/lib/postgresql/15/bin/";

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

// Forks `args` as uid/gid (when we are root and they differ), output appended
// to `log`. In the child only async-signal-safe calls.
pid_t Spawn(std::vector<std::string> args, uid_t uid, gid_t gid,
            const std::string& log, bool die_with_parent) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const bool drop = geteuid() == 0 && uid != 0;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  if (drop &&
      (setgroups(0, nullptr) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) {
    _exit(126);
  }
  // After setuid: a change of credentials clears the death signal.
  if (die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
  }
  const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (out >= 0) {
    dup2(out, 1);
    dup2(out, 2);
  }
  execve(argv[0], argv.data(), environ);
  _exit(127);
}

// Waits at most `seconds` for `pid`; kills it past that. Its exit status, or
// -1 on timeout.
int WaitFor(pid_t pid, int seconds) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

// Runs a client program (createdb, pg_isready) as ourselves.
int RunClient(std::vector<std::string> args, const std::string& log,
              int seconds) {
  const pid_t pid = Spawn(std::move(args), geteuid(), getegid(), log, true);
  if (pid < 0) return -1;
  return WaitFor(pid, seconds);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresProcess>> PostgresProcess::Start() {
  std::unique_ptr<PostgresProcess> pg(new PostgresProcess());
  char pattern[] = "/tmp/weightcast-pg-XXXXXX";
  if (mkdtemp(pattern) == nullptr)
    return absl::InternalError("cannot make a directory under /tmp");
  pg->dir_ = pattern;
  pg->uid_ = geteuid();
  pg->gid_ = getegid();
  if (geteuid() == 0) {
    // initdb and postgres refuse to run as root.
    const passwd* user = getpwnam("postgres");
    if (user == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, and there is no 'postgres' user to run "
          "PostgreSQL as (apt-get install postgresql makes it)");
    }
    pg->uid_ = user->pw_uid;
    pg->gid_ = user->pw_gid;
    if (chown(pg->dir_.c_str(), pg->uid_, pg->gid_) != 0)
      return absl::InternalError(pg->dir_ + ": chown to postgres failed");
  }
  const std::string log = pg->dir_ + "/initdb.log";
  const pid_t initdb = Spawn(
      {absl::StrCat(kBin, "initdb"), "-D", pg->dir_ + "/data", "-U",
       "weightcast", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"},
      pg->uid_, pg->gid_, log, true);
  if (initdb < 0) return absl::InternalError("fork failed");
  const int code = WaitFor(initdb, 60);
  if (code != 0) {
    return absl::InternalError(absl::StrCat(
        "initdb ",
        code < 0 ? "took over 60 s" : absl::StrCat("exited with ", code), ": ",
        Tail(log)));
  }
  pg->port_ = FreeLoopbackPort();
  if (pg->port_ == 0) return absl::InternalError("no free loopback port");
  if (absl::Status s = pg->Launch(); !s.ok()) return s;
  return pg;
}

absl::Status PostgresProcess::Launch() {
  const std::string log = dir_ + "/postgres.log";
  pid_ = Spawn({absl::StrCat(kBin, "postgres"), "-D", dir_ + "/data", "-p",
                absl::StrCat(port_), "-k", dir_, "-c",
                "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
                "synchronous_commit=off", "-c", "full_page_writes=off"},
               uid_, gid_, log, true);
  if (pid_ < 0) return absl::InternalError("fork failed");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(
          absl::StrCat("postgres exited at start: ", Tail(log)));
    }
    if (RunClient({absl::StrCat(kBin, "pg_isready"), "-q", "-h", "127.0.0.1",
                   "-p", absl::StrCat(port_)},
                  "/dev/null", 5) == 0) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("postgres did not accept connections in 20 s: ", Tail(log)));
}

std::string PostgresProcess::Url(const std::string& database) const {
  return absl::StrCat("postgresql://weightcast@127.0.0.1:", port_, "/",
                      database);
}

absl::StatusOr<std::string> PostgresProcess::CreateDatabase(
    const std::string& name) {
  const std::string log = dir_ + "/createdb.log";
  const int code =
      RunClient({absl::StrCat(kBin, "createdb"), "-h", "127.0.0.1", "-p",
                 absl::StrCat(port_), "-U", "weightcast", name},
                log, 20);
  if (code != 0)
    return absl::InternalError(
        absl::StrCat("createdb ", name, " failed: ", Tail(log)));
  return Url(name);
}

absl::Status PostgresProcess::Stop() {
  if (pid_ <= 0) return absl::OkStatus();
  kill(pid_, SIGINT);  // fast shutdown
  const int code = WaitFor(pid_, 20);
  pid_ = -1;
  if (code < 0)
    return absl::DeadlineExceededError("postgres took over 20 s to stop");
  return absl::OkStatus();
}

absl::Status PostgresProcess::Restart() {
  if (absl::Status s = Stop(); !s.ok()) return s;
  return Launch();
}

PostgresProcess::~PostgresProcess() {
  Stop().IgnoreError();
  std::error_code error;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
}

absl::StatusOr<PostgresProcess*> SharedPostgres() {
  static absl::StatusOr<std::unique_ptr<PostgresProcess>>* shared =
      new absl::StatusOr<std::unique_ptr<PostgresProcess>>(
          PostgresProcess::Start());
  static const bool stop_at_exit = [] {
    std::atexit([] {
      if (shared->ok()) shared->value().reset();
    });
    return true;
  }();
  (void)stop_at_exit;
  if (!shared->ok()) return shared->status();
  return shared->value().get();
}

absl::StatusOr<std::string> FreshRegistryLocation(
    const std::string& engine, const std::string& sqlite_path,
    const std::string& database_prefix) {
  if (engine == "sqlite") return sqlite_path;
  static int databases = 0;
  absl::StatusOr<PostgresProcess*> pg = SharedPostgres();
  if (!pg.ok()) return pg.status();
  return (*pg)->CreateDatabase(absl::StrCat(database_prefix, "_", ++databases));
}

}  // namespace weightcast
