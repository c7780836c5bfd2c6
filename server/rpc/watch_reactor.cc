#include "server/rpc/watch_reactor.h"

#include <algorithm>
#include <vector>

#include "server/rpc/conversions.h"

namespace weightcast {
namespace {

// A stream refused before it started: finishes at once, deleted at OnDone.
class RefusedWatch final : public grpc::ServerWriteReactor<v1::WatchEvent> {
 public:
  explicit RefusedWatch(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

WatchKeepalive::WatchKeepalive(absl::Duration interval)
    : interval_(interval), thread_([this] { Run(); }) {}

WatchKeepalive::~WatchKeepalive() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void WatchKeepalive::Add(const std::shared_ptr<WatchReactor>& reactor) {
  absl::MutexLock lock(&mu_);
  reactors_.emplace(reactor.get(), reactor);
}

void WatchKeepalive::Remove(WatchReactor* reactor) {
  absl::MutexLock lock(&mu_);
  reactors_.erase(reactor);
}

void WatchKeepalive::Run() {
  // A stream's keepalive is at most a tick late.
  const absl::Duration tick = std::min(interval_ / 4, absl::Seconds(1));
  std::vector<std::weak_ptr<WatchReactor>> reactors;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_;
      };
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), tick)) return;
      reactors.clear();
      for (const auto& [raw, reactor] : reactors_) reactors.push_back(reactor);
    }
    const absl::Time now = absl::Now();
    for (const std::weak_ptr<WatchReactor>& weak : reactors) {
      if (std::shared_ptr<WatchReactor> reactor = weak.lock())
        reactor->KeepaliveIfIdle(now, interval_);
    }
  }
}

grpc::ServerWriteReactor<v1::WatchEvent>* WatchReactor::Refuse(
    grpc::Status status) {
  return new RefusedWatch(std::move(status));
}

grpc::ServerWriteReactor<v1::WatchEvent>* WatchReactor::Start(
    Fleet* fleet, ServerMetrics* metrics, WatchKeepalive* keepalive,
    std::unique_ptr<StreamLimiter::Slot> slot, WatchSpec spec) {
  std::shared_ptr<WatchReactor> reactor(
      new WatchReactor(fleet, metrics, keepalive, std::move(slot)));
  reactor->self_ = reactor;
  absl::StatusOr<std::shared_ptr<Subscription>> subscription =
      fleet->Subscribe(std::move(spec), reactor);
  if (!subscription.ok()) {
    {
      absl::MutexLock lock(&reactor->mu_);
      reactor->finished_ = true;
    }
    reactor->Finish(ToGrpcStatus(subscription.status()));
    return reactor.get();
  }
  {
    absl::MutexLock lock(&reactor->mu_);
    reactor->subscription_ = *std::move(subscription);
  }
  keepalive->Add(reactor);
  reactor->Pump();  // the assignments queued at Subscribe
  return reactor.get();
}

void WatchReactor::KeepaliveIfIdle(absl::Time now, absl::Duration interval) {
  {
    absl::MutexLock lock(&mu_);
    if (writing_ || now - last_write_ < interval) return;
    keepalive_due_ = true;
  }
  Pump();
}

void WatchReactor::Pump() {
  enum { kNothing, kWrite, kFinish } next = kNothing;
  grpc::Status status;
  const v1::WatchEvent* write = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (writing_ || finished_ || subscription_ == nullptr) return;
    if (cancelled_) {
      next = kFinish;  // the client is gone; the status is not seen
    } else if (subscription_->closed()) {
      next = kFinish;
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "the server is shutting down");
    } else if (std::optional<AssignmentEvent> e = subscription_->Take()) {
      event_.Clear();
      v1::Assignment* a = event_.mutable_assignment();
      a->set_model(e->model);
      a->set_version(e->version);
      a->set_tier(e->tier);
      a->set_reason(ToProto(e->reason));
      next = kWrite;
    } else if (keepalive_due_) {
      event_.Clear();
      event_.set_keepalive_unix_ms(absl::ToUnixMillis(absl::Now()));
      next = kWrite;
    }
    if (next == kWrite) {
      write = &event_;  // not touched again until OnWriteDone
      writing_ = true;
      keepalive_due_ = false;
      last_write_ = absl::Now();
    }
    if (next == kFinish) finished_ = true;
  }
  if (next == kWrite) {
    metrics_->RecordWatchEvent(write->has_assignment() ? "assignment"
                                                       : "keepalive");
    StartWrite(write);
  } else if (next == kFinish) {
    Finish(status);
  }
}

void WatchReactor::OnWriteDone(bool ok) {
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok && !finished_) {  // the client went away
      finished_ = true;
      finish = true;
    }
  }
  if (finish) {
    Finish(grpc::Status::OK);
    return;
  }
  Pump();
}

void WatchReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  Pump();
}

void WatchReactor::OnDone() {
  keepalive_->Remove(this);
  std::shared_ptr<Subscription> subscription;
  {
    absl::MutexLock lock(&mu_);
    subscription = std::move(subscription_);
  }
  if (subscription) fleet_->Unsubscribe(subscription);
  slot_.reset();
  self_.reset();  // may delete this: the last statement
}

}  // namespace weightcast
