#include "server/storage/sqlite.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

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

class SqliteStatement : public StatementBackend {
 public:
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~SqliteStatement() override { sqlite3_finalize(stmt_); }

  void Bind(int index, int64_t value) override {
    Check(sqlite3_bind_int64(stmt_, index, value));
  }
  void Bind(int index, double value) override {
    Check(sqlite3_bind_double(stmt_, index, value));
  }
  void Bind(int index, absl::string_view text) override {
    Check(sqlite3_bind_text(stmt_, index, text.data(),
                            static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  void BindBlob(int index, absl::string_view bytes) override {
    Check(sqlite3_bind_blob(stmt_, index, bytes.data(),
                            static_cast<int>(bytes.size()), SQLITE_TRANSIENT));
  }

  absl::StatusOr<bool> Step() override {
    if (!bind_error_.ok()) return bind_error_;
    const int code = sqlite3_step(stmt_);
    if (code == SQLITE_ROW) return true;
    if (code == SQLITE_DONE) return false;
    return SqlError(db_, code, sqlite3_sql(stmt_));
  }

  bool IsNull(int column) const override {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
  }
  int64_t Int(int column) const override {
    return sqlite3_column_int64(stmt_, column);
  }
  double Real(int column) const override {
    return sqlite3_column_double(stmt_, column);
  }
  std::string Text(int column) const override {
    const unsigned char* text = sqlite3_column_text(stmt_, column);
    return text ? std::string(reinterpret_cast<const char*>(text),
                              sqlite3_column_bytes(stmt_, column))
                : std::string();
  }
  std::string Blob(int column) const override {
    const void* blob = sqlite3_column_blob(stmt_, column);
    return blob ? std::string(static_cast<const char*>(blob),
                              sqlite3_column_bytes(stmt_, column))
                : std::string();
  }

 private:
  void Check(int code) {
    if (code != SQLITE_OK)
      bind_error_ = absl::InternalError("sqlite bind failed");
  }
  sqlite3* const db_;
  sqlite3_stmt* const stmt_;
  absl::Status bind_error_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Database>> SqliteDatabase::Open(
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
  std::unique_ptr<Database> database(new SqliteDatabase(db, path));
  sqlite3_busy_timeout(db, 5000);
  if (absl::Status s =
          database->Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                            "PRAGMA foreign_keys=ON;");
      !s.ok()) {
    return s;
  }
  return database;
}

SqliteDatabase::~SqliteDatabase() { sqlite3_close(db_); }

absl::Status SqliteDatabase::Execute(absl::string_view sql) {
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

absl::StatusOr<Statement> SqliteDatabase::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int code = sqlite3_prepare_v2(
      db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (code != SQLITE_OK) return SqlError(db_, code, sql.substr(0, 60));
  return Statement(std::make_unique<SqliteStatement>(db_, stmt));
}

absl::Status SqliteDatabase::Begin() { return Execute("BEGIN IMMEDIATE"); }

absl::Status SqliteDatabase::Commit() { return Execute("COMMIT"); }

void SqliteDatabase::Rollback() { Execute("ROLLBACK").IgnoreError(); }

}  // namespace weightcast
