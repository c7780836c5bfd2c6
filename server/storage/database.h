// The registry's database interface: a connection, prepared statements and
// transactions, errors as statuses. Two implementations: SQLite (sqlite.cc, a
// file in the data directory: the default) and PostgreSQL (postgres.cc, a
// server several replicas share). Registry and FleetRegistry write their SQL
// once, in the subset both engines accept: placeholders ?1, ?2, ...; upserts
// with ON CONFLICT; RETURNING for generated keys. The one dialect difference,
// column types in migrations, is translated in postgres.cc. A Database is used
// by one thread at a time (its owner serializes access with a mutex).
#ifndef WEIGHTCAST_SERVER_STORAGE_DATABASE_H_
#define WEIGHTCAST_SERVER_STORAGE_DATABASE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace weightcast {

// One engine's prepared statement (see Statement).
class StatementBackend {
 public:
  virtual ~StatementBackend() = default;
  virtual void Bind(int index, int64_t value) = 0;
  virtual void Bind(int index, double value) = 0;
  virtual void Bind(int index, absl::string_view text) = 0;
  virtual void BindBlob(int index, absl::string_view bytes) = 0;
  virtual absl::StatusOr<bool> Step() = 0;
  virtual bool IsNull(int column) const = 0;
  virtual int64_t Int(int column) const = 0;
  virtual double Real(int column) const = 0;
  virtual std::string Text(int column) const = 0;
  virtual std::string Blob(int column) const = 0;
};

// A prepared statement. Bind with 1-based indices (an index left unbound is
// NULL), then Step() until it returns false. Columns are 0-based.
class Statement {
 public:
  explicit Statement(std::unique_ptr<StatementBackend> backend)
      : backend_(std::move(backend)) {}

  Statement& Bind(int index, int64_t value) {
    backend_->Bind(index, value);
    return *this;
  }
  Statement& Bind(int index, double value) {
    backend_->Bind(index, value);
    return *this;
  }
  Statement& Bind(int index, absl::string_view text) {
    backend_->Bind(index, text);
    return *this;
  }
  Statement& BindBlob(int index, absl::string_view bytes) {
    backend_->BindBlob(index, bytes);
    return *this;
  }

  // true: a row is ready; false: done. Errors name the SQL.
  absl::StatusOr<bool> Step() { return backend_->Step(); }
  absl::Status Run();  // Step() to completion, for statements without results

  bool IsNull(int column) const { return backend_->IsNull(column); }
  int64_t Int(int column) const { return backend_->Int(column); }
  double Real(int column) const { return backend_->Real(column); }
  std::string Text(int column) const { return backend_->Text(column); }
  std::string Blob(int column) const { return backend_->Blob(column); }

 private:
  std::unique_ptr<StatementBackend> backend_;
};

// Calls a function for each notification on a channel until destroyed (see
// Database::Listen).
class DatabaseListener {
 public:
  virtual ~DatabaseListener() = default;
};

class Database {
 public:
  // `location`: a postgresql:// (or postgres://) URL opens PostgreSQL
  // (postgres.h); anything else is the path of a SQLite file, created if
  // needed (sqlite.h).
  static absl::StatusOr<std::unique_ptr<Database>> Open(
      const std::string& location);
  static bool IsPostgresUrl(absl::string_view location);

  virtual ~Database() = default;

  // What errors and logs may call this database: a SQLite path, or a
  // PostgreSQL URL without its password.
  virtual std::string name() const = 0;
  virtual bool is_postgres() const = 0;

  // One or more statements, no results.
  virtual absl::Status Execute(absl::string_view sql) = 0;
  virtual absl::StatusOr<Statement> Prepare(absl::string_view sql) = 0;
  // OK when the database answers a trivial query now (PostgreSQL: reconnects
  // if the connection was lost); UNAVAILABLE naming the database otherwise.
  virtual absl::Status Ping() = 0;

  // Tells every listener of `channel` (in any process on the same database)
  // `payload`, once the current transaction commits. PostgreSQL: NOTIFY;
  // SQLite (one process): nothing.
  virtual absl::Status Notify(const std::string& channel,
                              const std::string& payload) = 0;
  // Calls `on_payload` on a thread of its own for each notification on
  // `channel`, and with "" after a lost connection was made again
  // (notifications sent meanwhile are lost: reload everything). PostgreSQL:
  // LISTEN on a connection of its own; SQLite: null (nothing to hear).
  virtual absl::StatusOr<std::unique_ptr<DatabaseListener>> Listen(
      const std::string& channel,
      std::function<void(const std::string&)> on_payload) = 0;

  // Transactions (see Transaction). A PostgreSQL connection lost inside one
  // fails every statement until Rollback(), so nothing after the loss is
  // committed piecemeal.
  virtual absl::Status Begin() = 0;
  virtual absl::Status Commit() = 0;
  virtual void Rollback() = 0;

  // Brings the schema forward: migrations[v] moves version v to v + 1, each in
  // a transaction, recorded in the table `version_table`. FAILED_PRECONDITION
  // for a schema newer than the list. PostgreSQL: the migrations run under an
  // advisory lock, so replicas starting together migrate once.
  absl::Status Migrate(const std::vector<const char*>& migrations,
                       const std::string& version_table = "schema_version");

 protected:
  // The engine's form of a migration's DDL (column types).
  virtual std::string Ddl(absl::string_view sql) const {
    return std::string(sql);
  }
  // Held around the migrations (PostgreSQL: pg_advisory_lock).
  virtual absl::Status LockMigrations() { return absl::OkStatus(); }
  virtual void UnlockMigrations() {}
};

// A transaction on a Database: Commit() ends it; destroyed without a commit it
// rolls back, so every early return of the code between undoes what it did.
// The database must outlive it; used on the database's thread.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Database* db);
  Transaction(Transaction&& other) noexcept : db_(other.db_) {
    other.db_ = nullptr;
  }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();

  absl::Status Commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;  // null once committed or moved from
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_DATABASE_H_
