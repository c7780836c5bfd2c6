#include "server/storage/fleet_registry.h"

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

// Each entry moves the schema one version forward; never edit one that has
// shipped.
const std::vector<const char*> kMigrations = {
    R"sql(
    CREATE TABLE rollouts(
      model TEXT PRIMARY KEY,
      version TEXT NOT NULL,
      baseline TEXT NOT NULL,
      percent REAL NOT NULL,
      groups_csv TEXT NOT NULL,
      state INTEGER NOT NULL,
      started INTEGER NOT NULL);
    CREATE TABLE devices(
      device_id TEXT NOT NULL,
      model TEXT NOT NULL,
      version TEXT NOT NULL,
      tier TEXT NOT NULL,
      state TEXT NOT NULL,
      reason TEXT NOT NULL,
      bytes INTEGER NOT NULL,
      seconds REAL NOT NULL,
      updated INTEGER NOT NULL,
      PRIMARY KEY(device_id, model));
    CREATE INDEX devices_by_model ON devices(model, version, state);
    )sql",
};

RolloutRecord RolloutAt(const Statement& q) {
  RolloutRecord r{q.Text(0), q.Text(1), q.Text(2),
                  q.Real(3), {},        static_cast<RolloutState>(q.Int(5)),
                  q.Int(6)};
  for (absl::string_view g : absl::StrSplit(q.Text(4), ',', absl::SkipEmpty()))
    r.groups.emplace_back(g);
  return r;
}

constexpr char kRolloutChannel[] = "weightcast_rollouts";

constexpr char kRolloutColumns[] =
    "SELECT model, version, baseline, percent, groups_csv, state, started FROM "
    "rollouts";

}  // namespace

absl::StatusOr<std::unique_ptr<FleetRegistry>> FleetRegistry::Open(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(path));
  // In SQLite the fleet has a file of its own; in PostgreSQL it shares the
  // registry's database, so its schema version needs a table of its own.
  RETURN_IF_ERROR(db->Migrate(kMigrations, db->is_postgres()
                                               ? "fleet_schema_version"
                                               : "schema_version"));
  return std::unique_ptr<FleetRegistry>(new FleetRegistry(std::move(db)));
}

absl::Status FleetRegistry::PutRollout(const RolloutRecord& r) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement upsert,
      db_->Prepare("INSERT INTO rollouts(model, version, baseline, "
                   "percent, groups_csv, state, started) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(model) DO "
                   "UPDATE SET version = excluded.version, baseline = "
                   "excluded.baseline, percent = excluded.percent, groups_csv "
                   "= excluded.groups_csv, state = excluded.state, started = "
                   "excluded.started"));
  RETURN_IF_ERROR(upsert.Bind(1, r.model)
                      .Bind(2, r.version)
                      .Bind(3, r.baseline)
                      .Bind(4, r.percent)
                      .Bind(5, absl::StrJoin(r.groups, ","))
                      .Bind(6, int64_t{static_cast<int>(r.state)})
                      .Bind(7, r.started_unix_seconds)
                      .Run());
  // Replicas sharing the registry hear of it (ListenForRollouts).
  return db_->Notify(kRolloutChannel, r.model);
}

absl::StatusOr<std::unique_ptr<DatabaseListener>>
FleetRegistry::ListenForRollouts(
    std::function<void(const std::string&)> on_model) {
  absl::MutexLock lock(&mu_);
  return db_->Listen(kRolloutChannel, std::move(on_model));
}

absl::StatusOr<std::optional<RolloutRecord>> FleetRegistry::GetRollout(
    const std::string& model) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement query, db_->Prepare(absl::StrCat(
                                        kRolloutColumns, " WHERE model = ?1")));
  query.Bind(1, model);
  ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) return std::optional<RolloutRecord>();
  return std::optional<RolloutRecord>(RolloutAt(query));
}

absl::StatusOr<std::vector<RolloutRecord>> FleetRegistry::Rollouts() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Statement query, db_->Prepare(absl::StrCat(
                                        kRolloutColumns, " ORDER BY model")));
  std::vector<RolloutRecord> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    out.push_back(RolloutAt(query));
  }
  return out;
}

absl::Status FleetRegistry::PutDevice(const DeviceRecord& d) {
  absl::MutexLock lock(&mu_);
  return PutDeviceLocked(d);
}

absl::Status FleetRegistry::PutDevices(
    const std::vector<DeviceRecord>& devices) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(db_.get()));
  for (const DeviceRecord& d : devices) RETURN_IF_ERROR(PutDeviceLocked(d));
  return transaction.Commit();
}

absl::StatusOr<std::vector<std::string>> FleetRegistry::DevicesHolding(
    const std::string& model, const std::string& version) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT device_id FROM devices WHERE model = ?1 AND "
                   "version = ?2 AND state != 'FAILED'"));
  query.Bind(1, model).Bind(2, version);
  std::vector<std::string> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    out.push_back(query.Text(0));
  }
  return out;
}

absl::Status FleetRegistry::PutDeviceLocked(const DeviceRecord& d) {
  ASSIGN_OR_RETURN(
      Statement upsert,
      db_->Prepare("INSERT INTO devices(device_id, model, version, "
                   "tier, state, reason, bytes, seconds, updated) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                   "ON CONFLICT(device_id, model) DO UPDATE SET version = "
                   "excluded.version, tier = excluded.tier, state = "
                   "excluded.state, reason = excluded.reason, bytes = "
                   "excluded.bytes, seconds = excluded.seconds, updated = "
                   "excluded.updated"));
  return upsert.Bind(1, d.device_id)
      .Bind(2, d.model)
      .Bind(3, d.version)
      .Bind(4, d.tier)
      .Bind(5, d.state)
      .Bind(6, d.reason)
      .Bind(7, static_cast<int64_t>(d.bytes))
      .Bind(8, d.seconds)
      .Bind(9, d.updated_unix_seconds)
      .Run();
}

absl::StatusOr<std::optional<DeviceRecord>> FleetRegistry::GetDevice(
    const std::string& device_id, const std::string& model) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT device_id, model, version, tier, state, reason, "
                   "bytes, seconds, updated FROM devices "
                   "WHERE device_id = ?1 AND model = ?2"));
  query.Bind(1, device_id).Bind(2, model);
  ASSIGN_OR_RETURN(bool row, query.Step());
  if (!row) return std::optional<DeviceRecord>();
  return std::optional<DeviceRecord>(DeviceRecord{
      query.Text(0), query.Text(1), query.Text(2), query.Text(3), query.Text(4),
      query.Text(5), static_cast<uint64_t>(query.Int(6)), query.Real(7),
      query.Int(8)});
}

absl::StatusOr<std::vector<DeviceCount>> FleetRegistry::Counts(
    const std::string& model) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(
      Statement query,
      db_->Prepare("SELECT version, state, COUNT(*) FROM devices WHERE model = "
                   "?1 GROUP BY version, state ORDER BY version, state"));
  query.Bind(1, model);
  std::vector<DeviceCount> out;
  while (true) {
    ASSIGN_OR_RETURN(bool row, query.Step());
    if (!row) break;
    out.push_back(
        {query.Text(0), query.Text(1), static_cast<uint64_t>(query.Int(2))});
  }
  return out;
}

absl::Status FleetRegistry::Ping() {
  absl::MutexLock lock(&mu_);
  return db_->Ping();
}

}  // namespace weightcast
