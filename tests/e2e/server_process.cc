#include "tests/e2e/server_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace weightcast {

absl::StatusOr<ServerProcess> ServerProcess::Start(
    const std::string& binary, const std::string& data_dir,
    const std::vector<std::string>& extra, uint64_t max_file_bytes) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return absl::InternalError("pipe failed");
  std::vector<std::string> args = {binary,      "--listen",    "127.0.0.1:0",
                                   "--metrics", "127.0.0.1:0", "--data-dir",
                                   data_dir};
  // The tests and benchmarks written before encode-on-register count
  // encodings and time cold pulls: off unless a caller asks for it.
  if (std::find(extra.begin(), extra.end(), "--encode-on-register") ==
      extra.end())
    args.push_back("--no-encode-on-register");
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  ServerProcess process;
  const pid_t parent = getpid();
  process.pid_ = fork();
  if (process.pid_ == 0) {
    // The child dies with the test process, even one that aborts: an orphaned
    // server would hold ctest's output pipe open. Only async-signal-safe calls
    // until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (max_file_bytes != 0) {
      const rlimit limit{max_file_bytes, max_file_bytes};
      setrlimit(RLIMIT_FSIZE, &limit);
    }
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    execve(binary.c_str(), argv.data(), environ);
    _exit(127);
  }
  close(pipe_fds[1]);
  if (process.pid_ < 0) {
    close(pipe_fds[0]);
    process.pid_ = -1;
    return absl::InternalError(absl::StrCat("cannot start ", binary));
  }
  process.stdout_fd_ = pipe_fds[0];
  std::string output;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::string marker = "listening on ";
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd fd{process.stdout_fd_, POLLIN, 0};
    if (poll(&fd, 1, 100) <= 0) continue;
    char buffer[256];
    const ssize_t n = read(process.stdout_fd_, buffer, sizeof(buffer));
    if (n <= 0) break;
    output.append(buffer, n);
    const size_t at = output.find(marker);
    const size_t end = at == std::string::npos ? at : output.find('\n', at);
    if (end != std::string::npos) {
      process.address_ =
          output.substr(at + marker.size(), end - at - marker.size());
      const std::string metrics = "metrics on ";
      const size_t m = output.find(metrics);
      if (m != std::string::npos)
        process.metrics_url_ = output.substr(
            m + metrics.size(), output.find('\n', m) - m - metrics.size());
      return process;
    }
  }
  return absl::DeadlineExceededError(
      absl::StrCat(binary, " did not start listening; it printed: ", output));
}

ServerProcess::ServerProcess(ServerProcess&& other) noexcept
    : pid_(other.pid_),
      stdout_fd_(other.stdout_fd_),
      address_(std::move(other.address_)),
      metrics_url_(std::move(other.metrics_url_)) {
  other.pid_ = -1;
  other.stdout_fd_ = -1;
}

ServerProcess& ServerProcess::operator=(ServerProcess&& other) noexcept {
  if (this != &other) {
    Kill();
    if (stdout_fd_ >= 0) close(stdout_fd_);
    pid_ = other.pid_;
    stdout_fd_ = other.stdout_fd_;
    address_ = std::move(other.address_);
    metrics_url_ = std::move(other.metrics_url_);
    other.pid_ = -1;
    other.stdout_fd_ = -1;
  }
  return *this;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

void ServerProcess::Terminate() {
  if (pid_ > 0) kill(pid_, SIGTERM);
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

absl::StatusOr<std::string> HttpGet(const std::string& url) {
  const std::string prefix = "http://127.0.0.1:";
  if (url.rfind(prefix, 0) != 0)
    return absl::InvalidArgumentError("only http://127.0.0.1 URLs");
  const size_t slash = url.find('/', prefix.size());
  const int port = std::stoi(url.substr(prefix.size(), slash - prefix.size()));
  const std::string path = slash == std::string::npos ? "/" : url.substr(slash);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", url));
  }
  const std::string request =
      absl::StrCat("GET ", path,
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;)
    response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return absl::DataLossError("no HTTP body");
  return response.substr(body + 4);
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  close(fd);
  return ntohs(addr.sin_port);
}

uint64_t ProcessStatusKb(pid_t pid, const char* field) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0)
      return std::stoull(line.substr(std::strlen(field) + 1));
  }
  return 0;
}

}  // namespace weightcast
