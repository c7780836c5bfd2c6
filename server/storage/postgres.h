// The PostgreSQL implementation of Database (libpqxx; postgres.cc is the only
// file that includes it or libpq). Several weightcastd replicas may share one
// PostgreSQL database: every statement runs on the server, transactions are
// PostgreSQL's own, and migrations take an advisory lock.
#ifndef WEIGHTCAST_SERVER_STORAGE_POSTGRES_H_
#define WEIGHTCAST_SERVER_STORAGE_POSTGRES_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/storage/database.h"

namespace weightcast {

// Connects to `url` (postgresql://user[:password]@host[:port]/db[?params]),
// giving up after connect_timeout (5 s unless the URL sets it). Errors name
// the URL without its password. A lost connection is re-established by the
// next statement outside a transaction (or Ping()).
absl::StatusOr<std::unique_ptr<Database>> OpenPostgres(const std::string& url);

// `url` without a password: the userinfo's password and any password=
// parameter are replaced by "***". What logs and errors may show.
std::string RedactPostgresUrl(absl::string_view url);

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_STORAGE_POSTGRES_H_
