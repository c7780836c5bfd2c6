#include "tests/e2e/nginx_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/e2e/server_process.h"

extern char** environ;

namespace weightcast {
namespace {

constexpr char kNginx[] = "/usr/sbin/nginx";

// The config: one blob location, cached for as long as weightcastd says
// (Cache-Control immutable, a year); concurrent misses of one blob wait for the
// first (proxy_cache_lock) so weightcastd sees one request per blob. Ranges
// are served by nginx from the cached whole blob. Anything else: 404.
std::string Config(const std::string& dir, int port, int upstream_port,
                   int64_t limit_rate) {
  return absl::StrCat(
      geteuid() == 0 ? "user root;\n" : "",
      "daemon off;\nmaster_process off;\n"
      "pid ",
      dir, "/nginx.pid;\nerror_log ", dir, "/error.log warn;\n",
      "events { worker_connections 1024; }\n"
      "http {\n"
      "  log_format blobs '$request_method $uri $status "
      "$upstream_cache_status \"$upstream_addr\" $body_bytes_sent';\n"
      "  access_log ",
      dir, "/access.log blobs;\n", "  client_body_temp_path ", dir,
      "/client_temp;\n", "  proxy_temp_path ", dir, "/proxy_temp;\n",
      "  fastcgi_temp_path ", dir, "/fastcgi_temp;\n", "  uwsgi_temp_path ",
      dir, "/uwsgi_temp;\n", "  scgi_temp_path ", dir, "/scgi_temp;\n",
      "  proxy_cache_path ", dir,
      "/cache levels=1:2 keys_zone=blobs:10m max_size=2g inactive=7d "
      "use_temp_path=off;\n"
      "  server {\n"
      "    listen 127.0.0.1:",
      port, ";\n",
      "    location /v1/blobs/ {\n"
      "      limit_except GET { deny all; }\n"
      "      proxy_pass http://127.0.0.1:",
      upstream_port, ";\n",
      "      proxy_http_version 1.1;\n"
      "      proxy_cache blobs;\n"
      "      proxy_cache_key $uri;\n"
      "      proxy_cache_lock on;\n"
      "      proxy_cache_lock_timeout 60s;\n"
      "      proxy_cache_lock_age 60s;\n"
      "      proxy_read_timeout 30s;\n",
      limit_rate > 0 ? absl::StrCat("      limit_rate ", limit_rate, ";\n")
                     : std::string(),
      "    }\n"
      "    location / { return 404; }\n"
      "  }\n"
      "}\n");
}

}  // namespace

absl::StatusOr<NginxProcess> NginxProcess::Start(const std::string& dir,
                                                 int port, int upstream_port,
                                                 int64_t limit_rate) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  {
    std::ofstream out(dir + "/nginx.conf");
    out << Config(dir, port, upstream_port, limit_rate);
    if (!out) return absl::InternalError(dir + ": cannot write nginx.conf");
  }
  std::vector<std::string> args = {kNginx, "-p", dir, "-c",
                                   dir + "/nginx.conf"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  NginxProcess process;
  process.port_ = port;
  process.dir_ = dir;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    execve(kNginx, argv.data(), environ);
    _exit(127);
  }
  if (pid < 0) return absl::InternalError("fork failed");
  process.pid_ = pid;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      process.pid_ = -1;
      std::ifstream log(dir + "/error.log");
      std::string text((std::istreambuf_iterator<char>(log)), {});
      return absl::InternalError(
          absl::StrCat("nginx exited at start: ", text.substr(0, 2000)));
    }
    if (HttpGet(absl::StrCat("http://127.0.0.1:", port, "/ready"))
            .status()
            .code() != absl::StatusCode::kUnavailable)
      return process;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError("nginx did not start answering in 10 s");
}

NginxProcess::NginxProcess(NginxProcess&& other) noexcept
    : pid_(other.pid_.exchange(-1)),
      port_(other.port_),
      dir_(std::move(other.dir_)) {}

NginxProcess::~NginxProcess() {
  const pid_t pid = pid_.exchange(-1);
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

std::string NginxProcess::url() const {
  return absl::StrCat("http://127.0.0.1:", port_);
}

void NginxProcess::Stop() {
  const pid_t pid = pid_.exchange(-1);
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 100; ++i) {  // at most 5 s, then SIGKILL
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

NginxProcess::LogCounts NginxProcess::ReadLog() const {
  LogCounts counts;
  absl::flat_hash_set<std::string> paths;
  std::ifstream log(dir_ + "/access.log");
  std::string line;
  for (int lines = 0; lines < 10'000'000 && std::getline(log, line); ++lines) {
    if (line.rfind("GET /v1/blobs/", 0) != 0 &&
        line.rfind("HEAD /v1/blobs/", 0) != 0)
      continue;
    ++counts.requests;
    const std::vector<std::string> fields = absl::StrSplit(line, ' ');
    if (fields.size() >= 2) paths.insert(fields[1]);
    if (fields.size() >= 5) {
      counts.hits += fields[3] == "HIT";
      counts.origin_requests += fields[4] != "\"-\"";
    }
  }
  counts.blobs = static_cast<int>(paths.size());
  return counts;
}

}  // namespace weightcast
