// The fleet's durable state, in its own SQLite file (fleet.db in the data
// directory): one rollout per model, and each device's last reported status per
// model. Schema migrations run on Open. Thread-safe: one mutex serializes every
// statement.
#ifndef WEIGHTCAST_SERVER_STORAGE_FLEET_REGISTRY_H_
#define WEIGHTCAST_SERVER_STORAGE_FLEET_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/database.h"

namespace weightcast {

enum class RolloutState { kActive = 1, kPaused = 2, kRolledBack = 3 };

struct RolloutRecord {
  std::string model;
  std::string version;  // the target
  std::string
      baseline;  // the version devices outside the rollout keep; may be empty
  double percent = 0;
  std::vector<std::string> groups;
  RolloutState state = RolloutState::kActive;
  int64_t started_unix_seconds = 0;
};

struct DeviceRecord {
  std::string device_id;
  std::string model;
  std::string version;
  std::string tier;
  std::string state;  // DOWNLOADING | INSTALLED | FAILED
  std::string reason;
  uint64_t bytes = 0;
  double seconds = 0;
  int64_t updated_unix_seconds = 0;
};

struct DeviceCount {
  std::string version;
  std::string state;
  uint64_t devices = 0;
};

class FleetRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<FleetRegistry>> Open(
      const std::string& path);

  // Inserts or replaces the model's rollout, and tells the listeners of every
  // replica sharing the registry.
  absl::Status PutRollout(const RolloutRecord& rollout);
  // Calls `on_model` (on a thread of its own) with the model of each rollout
  // any replica puts, and with "" when some may have been missed (reload
  // all). Null with SQLite: one process, nobody else to hear from.
  absl::StatusOr<std::unique_ptr<DatabaseListener>> ListenForRollouts(
      std::function<void(const std::string&)> on_model);
  absl::StatusOr<std::optional<RolloutRecord>> GetRollout(
      const std::string& model);
  absl::StatusOr<std::vector<RolloutRecord>> Rollouts();

  // Inserts or replaces the device's status for its model.
  absl::Status PutDevice(const DeviceRecord& device);
  // PutDevice for each, in order, in one transaction (all or none).
  absl::Status PutDevices(const std::vector<DeviceRecord>& devices);
  // The devices whose last report for `model` is `version` in a state other
  // than FAILED.
  absl::StatusOr<std::vector<std::string>> DevicesHolding(
      const std::string& model, const std::string& version);
  absl::StatusOr<std::optional<DeviceRecord>> GetDevice(
      const std::string& device_id, const std::string& model);
  // Devices of `model` by (version, state).
  absl::StatusOr<std::vector<DeviceCount>> Counts(const std::string& model);

  // OK while the database answers (PostgreSQL: reconnecting if it must).
  absl::Status Ping();

 private:
  explicit FleetRegistry(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  absl::Status PutDeviceLocked(const DeviceRecord& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Mutex mu_;
  const std::unique_ptr<Database> db_ ABSL_PT_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_FLEET_REGISTRY_H_
