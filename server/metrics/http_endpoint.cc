#include "server/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

// civetweb does not take port 0: ask the kernel for a free loopback port (HOST:0 -> HOST:PORT).
// Another process could take it before civetweb binds; Start then fails clearly.
std::string WithFreePort(const std::string& address) {
  if (address.size() < 2 || address.substr(address.size() - 2) != ":0") return address;
  const std::string host = address.substr(0, address.size() - 2);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& address,
                                                                        std::function<std::string()> exposition) {
  static std::once_flag library_init;
  std::call_once(library_init, [] { mg_init_library(0); });
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint(std::move(exposition)));
  const std::string listen = WithFreePort(address);
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  mg_init_data init;
  std::memset(&init, 0, sizeof(init));
  init.callbacks = &callbacks;
  init.configuration_options = options;
  char error_text[256] = "";
  mg_error_data error;
  std::memset(&error, 0, sizeof(error));
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  endpoint->context_ = mg_start2(&init, &error);
  if (endpoint->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen, ": ", error_text));
  }
  mg_set_request_handler(endpoint->context_, "/metrics", &MetricsEndpoint::Handle, endpoint.get());
  mg_server_port ports[4];
  const int count = mg_get_server_ports(endpoint->context_, 4, ports);
  if (count > 0) endpoint->port_ = ports[0].port;
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (context_ != nullptr) mg_stop(context_);
}

int MetricsEndpoint::Handle(mg_connection* connection, void* self) {
  const std::string body = static_cast<MetricsEndpoint*>(self)->exposition_();
  mg_printf(connection,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
            body.size());
  mg_write(connection, body.data(), body.size());
  return 200;
}

}  // namespace weightcast
