#include "server/storage/sqlite.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

absl::Status SqlError(sqlite3* db, int code, absl::string_view what) {
  const std::string message =
      absl::StrCat("sqlite: ", what, ": ", sqlite3_errmsg(db));
  if (code == SQLITE_FULL) return absl::ResourceExhaustedError(message);
  if (code == SQLITE_CONSTRAINT) return absl::AlreadyExistsError(message);
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    return absl::UnavailableError(message);
  return absl::InternalError(message);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> Database::Open(
    const std::string& path) {
  sqlite3* db = nullptr;
  const int code = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
      nullptr);
  if (code != SQLITE_OK) {
    const std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat(path, ": cannot open database: ", message));
  }
  std::unique_ptr<Database> database(new Database(db));
  sqlite3_busy_timeout(db, 5000);
  if (absl::Status s =
          database->Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                            "PRAGMA foreign_keys=ON;");
      !s.ok()) {
    return s;
  }
  return database;
}

Database::~Database() { sqlite3_close(db_); }

absl::Status Database::Execute(absl::string_view sql) {
  char* error = nullptr;
  const int code =
      sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &error);
  if (code != SQLITE_OK) {
    const std::string message = error ? error : "";
    sqlite3_free(error);
    return SqlError(db_, code, absl::StrCat(sql.substr(0, 60), ": ", message));
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> Database::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int code = sqlite3_prepare_v2(
      db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (code != SQLITE_OK) return SqlError(db_, code, sql.substr(0, 60));
  return Statement(db_, stmt);
}

int64_t Database::LastInsertId() const {
  return sqlite3_last_insert_rowid(db_);
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(other.stmt_), bind_error_(other.bind_error_) {
  other.stmt_ = nullptr;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::Bind(int index, int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK)
    bind_error_ = absl::InternalError("sqlite bind failed");
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK)
    bind_error_ = absl::InternalError("sqlite bind failed");
  return *this;
}

Statement& Statement::Bind(int index, absl::string_view text) {
  if (sqlite3_bind_text(stmt_, index, text.data(),
                        static_cast<int>(text.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK) {
    bind_error_ = absl::InternalError("sqlite bind failed");
  }
  return *this;
}

Statement& Statement::BindBlob(int index, absl::string_view bytes) {
  if (sqlite3_bind_blob(stmt_, index, bytes.data(),
                        static_cast<int>(bytes.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK) {
    bind_error_ = absl::InternalError("sqlite bind failed");
  }
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_error_.ok()) return bind_error_;
  const int code = sqlite3_step(stmt_);
  if (code == SQLITE_ROW) return true;
  if (code == SQLITE_DONE) return false;
  return SqlError(db_, code, sqlite3_sql(stmt_));
}

absl::Status Statement::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}
int64_t Statement::Int(int column) const {
  return sqlite3_column_int64(stmt_, column);
}
double Statement::Real(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  return text ? std::string(reinterpret_cast<const char*>(text),
                            sqlite3_column_bytes(stmt_, column))
              : std::string();
}

std::string Statement::Blob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  return blob ? std::string(static_cast<const char*>(blob),
                            sqlite3_column_bytes(stmt_, column))
              : std::string();
}

absl::Status Database::Migrate(const std::vector<const char*>& migrations) {
  RETURN_IF_ERROR(Execute(
      "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)"));
  ASSIGN_OR_RETURN(
      Statement query,
      Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_version"));
  ASSIGN_OR_RETURN(bool row, query.Step());
  const int64_t current = row ? query.Int(0) : 0;
  const int64_t latest = static_cast<int64_t>(migrations.size());
  if (current > latest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "schema ", current, " is newer than this server (", latest, ")"));
  }
  for (int64_t v = current; v < latest; ++v) {
    ASSIGN_OR_RETURN(Transaction transaction, Transaction::Begin(this));
    RETURN_IF_ERROR(Execute(migrations[v]));
    RETURN_IF_ERROR(Execute(
        absl::StrCat("INSERT INTO schema_version VALUES (", v + 1, ")")));
    RETURN_IF_ERROR(transaction.Commit());
  }
  return absl::OkStatus();
}

absl::StatusOr<Transaction> Transaction::Begin(Database* db) {
  RETURN_IF_ERROR(db->Execute("BEGIN IMMEDIATE"));
  return Transaction(db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) db_->Execute("ROLLBACK").IgnoreError();
}

absl::Status Transaction::Commit() {
  Database* db = db_;
  db_ = nullptr;  // a failed COMMIT leaves the transaction open: roll it back
                  // here
  absl::Status status = db->Execute("COMMIT");
  if (!status.ok()) db->Execute("ROLLBACK").IgnoreError();
  return status;
}

}  // namespace weightcast
