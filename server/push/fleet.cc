#include "server/push/fleet.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/base/names.h"
#include "common/base/printable.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status CheckDeviceId(const std::string& id) {
  return CheckName("device_id", id, kMaxDeviceIdBytes);
}

absl::Status CheckWatch(const WatchSpec& spec) {
  RETURN_IF_ERROR(CheckDeviceId(spec.device_id));
  if (spec.models.empty())
    return absl::InvalidArgumentError("a watch names at least one model");
  if (spec.models.size() > kMaxWatchedModels ||
      spec.installed.size() > kMaxWatchedModels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a watch names at most ", kMaxWatchedModels, " models, not ",
        std::max(spec.models.size(), spec.installed.size())));
  }
  if (spec.groups.size() > kMaxWatchGroups) {
    return absl::InvalidArgumentError(
        absl::StrCat("a watch names at most ", kMaxWatchGroups, " groups, not ",
                     spec.groups.size()));
  }
  for (const std::string& model : spec.models)
    RETURN_IF_ERROR(CheckName("model", model, kMaxLabelBytes));
  for (const std::string& group : spec.groups)
    RETURN_IF_ERROR(CheckName("group", group, kMaxLabelBytes));
  if (spec.tier_name.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tier policy name must be at most ", kMaxLabelBytes,
                     " characters, not ", spec.tier_name.size()));
  }
  return absl::OkStatus();
}

}  // namespace

int RolloutBucket(const std::string& model, const std::string& device_id) {
  const std::string key = absl::StrCat(model, "/", device_id);
  const Sha256Digest digest = Sha256(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(key.data()), key.size()));
  const uint32_t head = (uint32_t{digest[0]} << 24) |
                        (uint32_t{digest[1]} << 16) |
                        (uint32_t{digest[2]} << 8) | digest[3];
  return static_cast<int>(head % 10000);
}

Subscription::Subscription(WatchSpec spec,
                           std::weak_ptr<SubscriptionListener> listener)
    : spec_(std::move(spec)),
      buckets_([this] {
        std::vector<int> buckets;
        for (const std::string& model : spec_.models)
          buckets.push_back(RolloutBucket(model, spec_.device_id));
        return buckets;
      }()),
      listener_(std::move(listener)) {}

std::optional<AssignmentEvent> Subscription::Take() {
  absl::MutexLock lock(&mu_);
  if (closed_ || queue_.empty()) return std::nullopt;
  AssignmentEvent event = std::move(queue_.front());
  queue_.erase(queue_.begin());
  return event;
}

std::optional<AssignmentEvent> Subscription::Next(absl::Duration wait) {
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || !queue_.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
  }
  return Take();
}

bool Subscription::closed() {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void Subscription::Push(AssignmentEvent event) {
  absl::MutexLock lock(&mu_);
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->model == event.model) {  // superseded before it was sent
      queue_.erase(it);
      break;
    }
  }
  queue_.push_back(std::move(event));
}

void Subscription::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

void Subscription::Wake() {
  if (std::shared_ptr<SubscriptionListener> listener = listener_.lock())
    listener->OnSubscriptionReady();
}

absl::StatusOr<std::unique_ptr<Fleet>> Fleet::Create(
    FleetRegistry* registry,
    std::function<absl::Status(const std::string&, const std::string&)>
        version_exists) {
  std::unique_ptr<Fleet> fleet(new Fleet(registry, std::move(version_exists)));
  ASSIGN_OR_RETURN(std::vector<RolloutRecord> rollouts, registry->Rollouts());
  absl::MutexLock lock(&fleet->mu_);
  for (RolloutRecord& r : rollouts) {
    RETURN_IF_ERROR(fleet->LoadHolding(r.model, r.version));
    fleet->rollouts_[r.model] = std::move(r);
  }
  return fleet;
}

absl::Status Fleet::LoadHolding(const std::string& model,
                                const std::string& version) {
  reports_.Flush();  // reports queued before now are in the registry
  ASSIGN_OR_RETURN(std::vector<std::string> devices,
                   registry_->DevicesHolding(model, version));
  absl::flat_hash_set<std::string>& holding = holding_[model];
  holding.clear();
  for (std::string& d : devices) holding.insert(std::move(d));
  return absl::OkStatus();
}

std::optional<AssignmentEvent> Fleet::AssignmentFor(const RolloutRecord& r,
                                                    const WatchSpec& spec,
                                                    int bucket) {
  auto to = [&](const std::string& version,
                AssignmentReason reason) -> std::optional<AssignmentEvent> {
    if (version.empty()) return std::nullopt;
    return AssignmentEvent{r.model, version, spec.tier_name, reason};
  };
  if (r.state == RolloutState::kRolledBack)
    return to(r.baseline, AssignmentReason::kRollback);
  bool in = bucket < static_cast<int>(r.percent * 100 + 1e-9);
  for (const std::string& g : spec.groups) {
    in = in || std::find(r.groups.begin(), r.groups.end(), g) != r.groups.end();
  }
  if (in && r.state == RolloutState::kPaused) {
    // Paused: no device starts the target; one that has (or is fetching) it
    // keeps it.
    auto it = spec.installed.find(r.model);
    bool has = it != spec.installed.end() && it->second == r.version;
    if (!has) {
      auto holding = holding_.find(r.model);
      has =
          holding != holding_.end() && holding->second.contains(spec.device_id);
    }
    in = has;
  }
  return in ? to(r.version, AssignmentReason::kRollout)
            : to(r.baseline, AssignmentReason::kBaseline);
}

std::vector<std::shared_ptr<Subscription>> Fleet::Notify(
    const RolloutRecord& rollout) {
  std::vector<std::shared_ptr<Subscription>> wake;
  auto watching = by_model_.find(rollout.model);
  if (watching == by_model_.end()) return wake;
  for (const auto& [sub, index] : watching->second) {
    std::optional<AssignmentEvent> event =
        AssignmentFor(rollout, sub->spec_, sub->buckets_[index]);
    if (!event) continue;
    std::string& sent = sub->sent_[rollout.model];
    if (sent == event->version) continue;
    sent = event->version;
    sub->Push(*std::move(event));
    wake.push_back(*subscriptions_.find(sub));
  }
  return wake;
}

void Fleet::WakeAll(const std::vector<std::shared_ptr<Subscription>>& subs) {
  for (const auto& sub : subs) sub->Wake();
}

absl::StatusOr<std::shared_ptr<Subscription>> Fleet::Subscribe(
    WatchSpec spec, std::weak_ptr<SubscriptionListener> listener) {
  RETURN_IF_ERROR(CheckWatch(spec));
  auto sub = std::shared_ptr<Subscription>(
      new Subscription(std::move(spec), std::move(listener)));
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  for (size_t i = 0; i < sub->spec_.models.size(); ++i) {
    const std::string& model = sub->spec_.models[i];
    by_model_[model].emplace(sub.get(), i);
    auto installed = sub->spec_.installed.find(model);
    if (installed != sub->spec_.installed.end())
      sub->sent_[model] = installed->second;
    auto rollout = rollouts_.find(model);
    if (rollout == rollouts_.end()) continue;
    std::optional<AssignmentEvent> event =
        AssignmentFor(rollout->second, sub->spec_, sub->buckets_[i]);
    if (!event || sub->sent_[model] == event->version) continue;
    sub->sent_[model] = event->version;
    sub->Push(*std::move(event));
  }
  subscriptions_.insert(sub);
  return sub;
}

void Fleet::Unsubscribe(const std::shared_ptr<Subscription>& subscription) {
  absl::MutexLock lock(&mu_);
  if (subscriptions_.erase(subscription) == 0) return;
  for (const std::string& model : subscription->spec_.models) {
    auto watching = by_model_.find(model);
    if (watching == by_model_.end()) continue;
    watching->second.erase(subscription.get());
    if (watching->second.empty()) by_model_.erase(watching);
  }
}

absl::Status Fleet::Report(DeviceRecord status) {
  absl::Notification stored;
  absl::Status outcome;
  Report(std::move(status), [&](absl::Status s) {
    outcome = std::move(s);
    stored.Notify();
  });
  stored.WaitForNotification();
  return outcome;
}

void Fleet::Report(DeviceRecord status,
                   std::function<void(absl::Status)> done) {
  absl::Status valid = Validate(status);
  if (!valid.ok()) {
    done(std::move(valid));
    return;
  }
  status.updated_unix_seconds = NowSeconds();
  absl::MutexLock lock(&mu_);
  auto rollout = rollouts_.find(status.model);
  if (rollout != rollouts_.end()) {
    absl::flat_hash_set<std::string>& holding = holding_[status.model];
    if (status.version == rollout->second.version && status.state != "FAILED") {
      holding.insert(status.device_id);
    } else {
      holding.erase(status.device_id);
    }
  }
  // Queued under mu_, so the registry sees reports in the order holding_ did.
  reports_.Add(std::move(status), std::move(done));
}

absl::Status Fleet::Validate(DeviceRecord& status) {
  RETURN_IF_ERROR(CheckDeviceId(status.device_id));
  if (status.state != "DOWNLOADING" && status.state != "INSTALLED" &&
      status.state != "FAILED") {
    return absl::InvalidArgumentError(
        "state must be DOWNLOADING, INSTALLED or FAILED");
  }
  RETURN_IF_ERROR(CheckName("model", status.model, kMaxLabelBytes));
  RETURN_IF_ERROR(CheckName("version", status.version, kMaxLabelBytes));
  if (!status.tier.empty()) RETURN_IF_ERROR(ParseTier(status.tier).status());
  if (status.reason.size() > kMaxReportReasonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reason is ", status.reason.size(), " bytes; at most ",
                     kMaxReportReasonBytes, " are kept"));
  }
  status.reason = Printable(status.reason);  // stored as it will be shown
  if (status.reason.size() > kMaxReportReasonBytes)
    status.reason.resize(kMaxReportReasonBytes);
  return absl::OkStatus();
}

absl::Status Fleet::CheckVersion(const DeviceRecord& status) const {
  if (absl::Status known = version_exists_(status.model, status.version);
      !known.ok()) {
    return absl::Status(known.code(),
                        absl::StrCat("a report about ", status.model, "/",
                                     status.version, ": ", known.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<RolloutView> Fleet::View(const RolloutRecord& rollout) {
  RolloutView view{rollout, {}, 0};
  ASSIGN_OR_RETURN(view.counts, registry_->Counts(rollout.model));
  auto watching = by_model_.find(rollout.model);
  if (watching != by_model_.end()) view.subscribers = watching->second.size();
  return view;
}

absl::StatusOr<RolloutView> Fleet::StartRollout(
    const std::string& model, const std::string& version, double percent,
    std::vector<std::string> groups) {
  if (!(percent >= 0 && percent <= 100))
    return absl::InvalidArgumentError("percent must be within 0..100");
  if (version.empty() || version == "latest")
    return absl::InvalidArgumentError("a rollout names a version label");
  RETURN_IF_ERROR(version_exists_(model, version));
  std::vector<std::shared_ptr<Subscription>> wake;
  absl::StatusOr<RolloutView> view = [&]() -> absl::StatusOr<RolloutView> {
    absl::MutexLock lock(&mu_);
    RolloutRecord next{model,       version,           "",
                       percent,     std::move(groups), RolloutState::kActive,
                       NowSeconds()};
    auto previous = rollouts_.find(model);
    if (previous != rollouts_.end()) {
      const RolloutRecord& p = previous->second;
      next.baseline =
          p.state == RolloutState::kRolledBack ? p.baseline : p.version;
      if (next.baseline == version)
        next.baseline = p.baseline;  // rolling out the baseline again
    }
    RETURN_IF_ERROR(registry_->PutRollout(next));
    const bool new_target =
        previous == rollouts_.end() || previous->second.version != next.version;
    rollouts_[model] = next;
    if (new_target) RETURN_IF_ERROR(LoadHolding(model, version));
    wake = Notify(next);
    return View(next);
  }();
  WakeAll(wake);
  return view;
}

absl::StatusOr<RolloutView> Fleet::Change(
    const std::string& model,
    const std::function<absl::Status(RolloutRecord&)>& edit) {
  std::vector<std::shared_ptr<Subscription>> wake;
  absl::StatusOr<RolloutView> view = [&]() -> absl::StatusOr<RolloutView> {
    absl::MutexLock lock(&mu_);
    auto it = rollouts_.find(model);
    if (it == rollouts_.end())
      return absl::NotFoundError(
          absl::StrCat("model ", Echo(model), " has no rollout"));
    // The stored rollout: another replica sharing the registry may have
    // changed it a moment ago.
    ASSIGN_OR_RETURN(std::optional<RolloutRecord> stored,
                     registry_->GetRollout(model));
    if (stored) it->second = *std::move(stored);
    RolloutRecord next = it->second;
    RETURN_IF_ERROR(edit(next));
    RETURN_IF_ERROR(registry_->PutRollout(next));
    it->second = next;
    wake = Notify(next);
    return View(next);
  }();
  WakeAll(wake);
  return view;
}

absl::StatusOr<RolloutView> Fleet::UpdateRollout(const std::string& model,
                                                 const RolloutChange& change) {
  return Change(model, [&](RolloutRecord& r) -> absl::Status {
    if (r.state == RolloutState::kRolledBack) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the rollout of ", model, " was rolled back; start a new one"));
    }
    if (change.percent >= 0) {
      if (change.percent > 100)
        return absl::InvalidArgumentError("percent must be within 0..100");
      r.percent = change.percent;
    }
    if (change.groups) r.groups = *change.groups;
    if (change.paused)
      r.state = *change.paused ? RolloutState::kPaused : RolloutState::kActive;
    return absl::OkStatus();
  });
}

absl::StatusOr<RolloutView> Fleet::Rollback(const std::string& model) {
  return Change(model, [&](RolloutRecord& r) -> absl::Status {
    if (r.baseline.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the rollout of ", model, " has no earlier version to return to"));
    }
    r.state = RolloutState::kRolledBack;
    return absl::OkStatus();
  });
}

absl::Status Fleet::Refresh(const std::string& model) {
  std::vector<RolloutRecord> rollouts;
  if (model.empty()) {
    ASSIGN_OR_RETURN(rollouts, registry_->Rollouts());
  } else {
    ASSIGN_OR_RETURN(std::optional<RolloutRecord> rollout,
                     registry_->GetRollout(model));
    if (rollout) rollouts.push_back(*std::move(rollout));
  }
  std::vector<std::shared_ptr<Subscription>> wake;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    for (RolloutRecord& next : rollouts) {
      auto previous = rollouts_.find(next.model);
      if (previous == rollouts_.end() ||
          previous->second.version != next.version) {
        status.Update(LoadHolding(next.model, next.version));
      }
      rollouts_[next.model] = next;
      std::vector<std::shared_ptr<Subscription>> more = Notify(next);
      wake.insert(wake.end(), more.begin(), more.end());
    }
  }
  WakeAll(wake);
  return status;
}

absl::StatusOr<RolloutView> Fleet::GetRollout(const std::string& model) {
  absl::MutexLock lock(&mu_);
  auto it = rollouts_.find(model);
  if (it == rollouts_.end())
    return absl::NotFoundError(
        absl::StrCat("model ", Echo(model), " has no rollout"));
  return View(it->second);
}

void Fleet::Shutdown() {
  std::vector<std::shared_ptr<Subscription>> wake;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (const auto& sub : subscriptions_) {
      sub->Close();
      wake.push_back(sub);
    }
  }
  WakeAll(wake);
}

size_t Fleet::subscribers() {
  absl::MutexLock lock(&mu_);
  return subscriptions_.size();
}

std::vector<std::pair<std::pair<std::string, std::string>, uint64_t>>
Fleet::DeviceStates() {
  std::vector<std::string> models;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [model, rollout] : rollouts_) models.push_back(model);
  }
  std::vector<std::pair<std::pair<std::string, std::string>, uint64_t>> out;
  for (const std::string& model : models) {
    auto counts = registry_->Counts(model);
    if (!counts.ok()) continue;
    std::map<std::string, uint64_t> by_state;
    for (const DeviceCount& c : *counts) by_state[c.state] += c.devices;
    for (const auto& [state, n] : by_state) out.push_back({{model, state}, n});
  }
  return out;
}

}  // namespace weightcast
