// Fleet push: devices subscribe (Watch) with the models they run, their groups
// and the versions they hold, and are sent the version assigned to them
// whenever it changes; operators run one rollout per model (a percentage of
// devices by a stable hash of the device id, plus named groups), pause it,
// raise it, roll it back. Rollouts and device reports persist in a
// FleetRegistry. No gRPC in here: the RPC handlers drain Subscriptions.
// Assignments are evaluated in memory (rollouts, and which devices reported a
// rollout's target), never with a query per device; device reports are stored
// in batches. Thread-safe.
#ifndef WEIGHTCAST_SERVER_PUSH_FLEET_H_
#define WEIGHTCAST_SERVER_PUSH_FLEET_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/push/report_writer.h"
#include "server/storage/fleet_registry.h"

namespace weightcast {

// The device's bucket for `model`, 0..9999: in a rollout at P percent iff
// bucket < 100 * P. Stable (SHA-256 of model and device id), so the devices at
// 20 % stay in at 40 %.
int RolloutBucket(const std::string& model, const std::string& device_id);

// Why a device is assigned a version (the RPC layer maps it to the API's enum).
enum class AssignmentReason { kRollout, kBaseline, kRollback };

struct AssignmentEvent {
  std::string model;
  std::string version;
  std::string
      tier;  // the device's policy tier name; empty: it selects by its policy
  AssignmentReason reason = AssignmentReason::kRollout;
};

struct WatchSpec {
  std::string device_id;
  std::vector<std::string> groups;
  std::vector<std::string> models;
  std::string tier_name;
  std::map<std::string, std::string>
      installed;  // model -> version the device holds
};

// Told that a Subscription has an event to take or was closed. Called on the
// thread that made the change, never under the Fleet's or the Subscription's
// lock; must not block.
class SubscriptionListener {
 public:
  virtual ~SubscriptionListener() = default;
  virtual void OnSubscriptionReady() = 0;
};

// One device's stream of events: at most one queued event per model (a newer
// assignment replaces one not yet taken), so its memory is bounded by the
// models it watches.
class Subscription {
 public:
  // The next queued event, if any; never blocks.
  std::optional<AssignmentEvent> Take();
  // Blocks for the next event; nullopt after `wait` or once closed.
  std::optional<AssignmentEvent> Next(absl::Duration wait);
  bool closed();

 private:
  friend class Fleet;
  Subscription(WatchSpec spec, std::weak_ptr<SubscriptionListener> listener);
  void Push(
      AssignmentEvent event);  // drops an older queued event of the same model
  void Close();
  void Wake();  // tells the listener, if it is still there

  const WatchSpec spec_;
  const std::vector<int> buckets_;  // RolloutBucket per spec_.models entry
  const std::weak_ptr<SubscriptionListener> listener_;
  absl::Mutex mu_;
  std::vector<AssignmentEvent> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::string>
      sent_;  // model -> version last assigned; under Fleet::mu_
};

struct RolloutView {
  RolloutRecord rollout;
  std::vector<DeviceCount> counts;
  uint64_t subscribers = 0;
};

struct RolloutChange {
  double percent = -1;                             // < 0: unchanged
  std::optional<std::vector<std::string>> groups;  // set: replaces them
  std::optional<bool> paused;
};

// What one Watch may name: each model a label, each group a label, and a
// tier policy name of at most kMaxLabelBytes; so a watcher's memory is bounded.
inline constexpr size_t kMaxWatchedModels = 64;
inline constexpr size_t kMaxWatchGroups = 64;

// Longest reason a device report may carry.
inline constexpr size_t kMaxReportReasonBytes = 1024;

class Fleet {
 public:
  // `version_exists` says whether (model, version) is registered (NOT_FOUND
  // otherwise). Loads the rollouts `registry` holds.
  static absl::StatusOr<std::unique_ptr<Fleet>> Create(
      FleetRegistry* registry,
      std::function<absl::Status(const std::string&, const std::string&)>
          version_exists);

  // INVALID_ARGUMENT for a bad device id, no models, a bad model or group name,
  // or more than kMaxWatchedModels models (installed entries too) or
  // kMaxWatchGroups groups; the current assignments
  // are queued at once (the listener is not called for those: take them).
  // `listener` (may be empty) hears of every later event and of the close.
  absl::StatusOr<std::shared_ptr<Subscription>> Subscribe(
      WatchSpec spec, std::weak_ptr<SubscriptionListener> listener = {});
  void Unsubscribe(const std::shared_ptr<Subscription>& subscription);
  // Stores a device's report. INVALID_ARGUMENT for a bad device id, state,
  // model or version name, a tier name that is not a tier's, or a reason over
  // kMaxReportReasonBytes; the version_exists status (NOT_FOUND) for a version
  // the server does not have. Control characters in the reason are stored
  // escaped. Waits until the report is stored.
  absl::Status Report(DeviceRecord status);
  // The same without waiting: `done` runs once, with a validation error at
  // once on this thread, else after the report's batch is stored (on the
  // report writer's thread; it must not call back into the Fleet). Reports
  // are stored in batches, one transaction each (ReportWriter).
  void Report(DeviceRecord status, std::function<void(absl::Status)> done);

  absl::StatusOr<RolloutView> StartRollout(const std::string& model,
                                           const std::string& version,
                                           double percent,
                                           std::vector<std::string> groups);
  absl::StatusOr<RolloutView> UpdateRollout(const std::string& model,
                                            const RolloutChange& change);
  absl::StatusOr<RolloutView> Rollback(const std::string& model);
  absl::StatusOr<RolloutView> GetRollout(const std::string& model);
  // Reloads `model`'s rollout (every rollout for "") from the registry, as
  // another replica sharing it changed it, and sends the watchers whose
  // assignment changed their new version.
  absl::Status Refresh(const std::string& model);

  // Closes every subscription (the server is draining); later Subscribes fail
  // UNAVAILABLE.
  void Shutdown();
  size_t subscribers();
  // Devices per (model, state) over every rollout's model, for metrics.
  std::vector<std::pair<std::pair<std::string, std::string>, uint64_t>>
  DeviceStates();

 private:
  Fleet(FleetRegistry* registry,
        std::function<absl::Status(const std::string&, const std::string&)>
            version_exists)
      : registry_(registry),
        version_exists_(std::move(version_exists)),
        reports_(registry,
                 [this](const DeviceRecord& r) { return CheckVersion(r); }) {}
  // The version the subscriber should run under `rollout` (empty: none), from
  // memory only. `bucket` is its RolloutBucket for the rollout's model.
  std::optional<AssignmentEvent> AssignmentFor(const RolloutRecord& rollout,
                                               const WatchSpec& spec,
                                               int bucket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues for each subscriber of the rollout's model its assignment if it
  // changed; returns the subscriptions to wake (after mu_ is released).
  std::vector<std::shared_ptr<Subscription>> Notify(
      const RolloutRecord& rollout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reloads holding_[model] for a new target from the registry (after the
  // queued reports are stored).
  absl::Status LoadHolding(const std::string& model, const std::string& version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void WakeAll(const std::vector<std::shared_ptr<Subscription>>& subs);
  // Checks a report's fields and makes its reason printable.
  static absl::Status Validate(DeviceRecord& status);
  // NOT_FOUND (version_exists_'s status) for a version the server lacks.
  absl::Status CheckVersion(const DeviceRecord& status) const;
  absl::StatusOr<RolloutView> View(const RolloutRecord& rollout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<RolloutView> Change(
      const std::string& model,
      const std::function<absl::Status(RolloutRecord&)>& edit);

  FleetRegistry* const registry_;
  const std::function<absl::Status(const std::string&, const std::string&)>
      version_exists_;
  absl::Mutex mu_;
  std::map<std::string, RolloutRecord> rollouts_
      ABSL_GUARDED_BY(mu_);  // loaded at start
  absl::flat_hash_set<std::shared_ptr<Subscription>> subscriptions_
      ABSL_GUARDED_BY(mu_);
  // model -> its subscriptions (with the model's index in spec_.models).
  absl::flat_hash_map<std::string, absl::flat_hash_map<Subscription*, size_t>>
      by_model_ ABSL_GUARDED_BY(mu_);
  // model -> devices whose last report is the rollout's target, not FAILED
  // (what a paused rollout lets keep the target); kept by Report.
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> holding_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  ReportWriter reports_;  // declared last: stores what is queued first
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_PUSH_FLEET_H_
