// The SQLite wrapper: a database handle and prepared statements with RAII,
// errors as statuses. The only file that includes sqlite3.h. A Database is used
// by one thread at a time (the registry serializes access with its own mutex);
// SQLite itself is built thread-safe.
#ifndef WEIGHTCAST_SERVER_STORAGE_SQLITE_H_
#define WEIGHTCAST_SERVER_STORAGE_SQLITE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace weightcast {

class Statement;

class Database {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode with foreign
  // keys on.
  static absl::StatusOr<std::unique_ptr<Database>> Open(
      const std::string& path);
  ~Database();

  absl::Status Execute(
      absl::string_view sql);  // one or more statements, no results
  absl::StatusOr<Statement> Prepare(absl::string_view sql);
  int64_t LastInsertId() const;
  // Brings the schema forward: migrations[v] moves version v to v + 1, each in
  // a transaction, recorded in a schema_version table. FAILED_PRECONDITION for
  // a schema newer than the list.
  absl::Status Migrate(const std::vector<const char*>& migrations);

 private:
  explicit Database(sqlite3* db) : db_(db) {}
  sqlite3* const db_;
};

// A transaction (BEGIN IMMEDIATE) on a Database: Commit() ends it; destroyed
// without a commit it rolls back, so every early return of the code between
// undoes what it did. The database must outlive it; used on the database's
// thread.
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

// A prepared statement. Bind with 1-based indices, then Step() until it returns
// false.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  ~Statement();

  Statement& Bind(int index, int64_t value);
  Statement& Bind(int index, double value);
  Statement& Bind(int index, absl::string_view text);
  Statement& BindBlob(int index, absl::string_view bytes);

  // true: a row is ready; false: done. Errors name the SQL.
  absl::StatusOr<bool> Step();
  absl::Status Run();  // Step() to completion, for statements without results

  bool IsNull(int column) const;
  int64_t Int(int column) const;
  double Real(int column) const;
  std::string Text(int column) const;
  std::string Blob(int column) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  absl::Status bind_error_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_SQLITE_H_
