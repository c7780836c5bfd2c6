#include "server/rpc/registry_monitor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace weightcast {

RegistryMonitor::RegistryMonitor(std::function<absl::Status()> ping,
                                 HealthService* health, absl::Duration interval)
    : ping_(std::move(ping)), health_(health), interval_(interval) {}

void RegistryMonitor::Start() {
  Check(/*first=*/true);
  thread_ = std::thread([this] { Loop(); });
}

RegistryMonitor::~RegistryMonitor() { Stop(); }

void RegistryMonitor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void RegistryMonitor::Check(bool first) {
  absl::Status status = ping_();
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  const bool changed = first || status.ok() != last_.ok();
  last_ = std::move(status);
  if (changed) health_->SetServing(last_.ok());
}

void RegistryMonitor::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), interval_)) return;
    }
    Check(/*first=*/false);
  }
}

grpc::Status RegistryMonitor::Admit() const {
  absl::MutexLock lock(&mu_);
  if (last_.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      std::string(last_.message()));
}

bool RegistryMonitor::reachable() const {
  absl::MutexLock lock(&mu_);
  return last_.ok();
}

}  // namespace weightcast
