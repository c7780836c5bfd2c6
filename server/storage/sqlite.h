// The SQLite implementation of Database: a file opened in WAL mode with
// foreign keys on. The only file that includes sqlite3.h is sqlite.cc. SQLite
// itself is built thread-safe; a SqliteDatabase is used by one thread at a
// time.
#ifndef WEIGHTCAST_SERVER_STORAGE_SQLITE_H_
#define WEIGHTCAST_SERVER_STORAGE_SQLITE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/storage/database.h"

struct sqlite3;

namespace weightcast {

class SqliteDatabase : public Database {
 public:
  // Opens (creating if needed) the database at `path`.
  static absl::StatusOr<std::unique_ptr<Database>> Open(
      const std::string& path);
  ~SqliteDatabase() override;

  std::string name() const override { return path_; }
  bool is_postgres() const override { return false; }
  absl::Status Execute(absl::string_view sql) override;
  absl::StatusOr<Statement> Prepare(absl::string_view sql) override;
  absl::Status Ping() override { return absl::OkStatus(); }
  absl::Status Notify(const std::string&, const std::string&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<DatabaseListener>> Listen(
      const std::string&, std::function<void(const std::string&)>) override {
    return nullptr;
  }
  absl::Status Begin() override;  // BEGIN IMMEDIATE
  absl::Status Commit() override;
  void Rollback() override;

 private:
  SqliteDatabase(sqlite3* db, std::string path)
      : db_(db), path_(std::move(path)) {}
  sqlite3* const db_;
  const std::string path_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_SQLITE_H_
