#include "server/storage/database.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "server/storage/postgres.h"
#include "server/storage/sqlite.h"

namespace weightcast {

bool Database::IsPostgresUrl(absl::string_view location) {
  return absl::StartsWith(location, "postgresql://") ||
         absl::StartsWith(location, "postgres://");
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(
    const std::string& location) {
  if (IsPostgresUrl(location)) return OpenPostgres(location);
  return SqliteDatabase::Open(location);
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

absl::Status Database::Migrate(const std::vector<const char*>& migrations,
                               const std::string& version_table) {
  RETURN_IF_ERROR(LockMigrations());
  struct Unlock {
    Database* db;
    ~Unlock() { db->UnlockMigrations(); }
  } unlock{this};
  RETURN_IF_ERROR(
      Execute(Ddl(absl::StrCat("CREATE TABLE IF NOT EXISTS ", version_table,
                               "(version INTEGER NOT NULL)"))));
  ASSIGN_OR_RETURN(
      Statement query,
      Prepare(absl::StrCat("SELECT COALESCE(MAX(version), 0) FROM ",
                           version_table)));
  ASSIGN_OR_RETURN(bool row, query.Step());
  const int64_t current = row ? query.Int(0) : 0;
  const int64_t latest = static_cast<int64_t>(migrations.size());
  if (current > latest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema ", current, " is newer than this server (", latest, ")"));
  }
  for (int64_t v = current; v < latest; ++v) {
    ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(this));
    RETURN_IF_ERROR(Execute(Ddl(migrations[v])));
    RETURN_IF_ERROR(Execute(
        absl::StrCat("INSERT INTO ", version_table, " VALUES (", v + 1, ")")));
    RETURN_IF_ERROR(transaction.Commit());
  }
  return absl::OkStatus();
}

absl::StatusOr<Transaction> Transaction::Begin(Database* db) {
  RETURN_IF_ERROR(db->Begin());
  return Transaction(db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) db_->Rollback();
}

absl::Status Transaction::Commit() {
  Database* db = db_;
  db_ = nullptr;  // a failed COMMIT leaves the transaction open: roll it back
                  // here
  absl::Status status = db->Commit();
  if (!status.ok()) db->Rollback();
  return status;
}

}  // namespace weightcast
