// Names that travel through the API and end up in paths and database rows
// (model names, version labels, device ids): 1..max_size characters of
// [A-Za-z0-9._-], not only dots. The one name check of the server and the
// agent. Pure; thread-safe.
#ifndef WEIGHTCAST_COMMON_BASE_NAMES_H_
#define WEIGHTCAST_COMMON_BASE_NAMES_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/base/printable.h"

namespace weightcast {

// Model names and version labels (they name folders and database rows).
inline constexpr size_t kMaxLabelBytes = 64;
// Device ids (rows of fleet.db).
inline constexpr size_t kMaxDeviceIdBytes = 128;

// INVALID_ARGUMENT naming `what` (e.g. "model name") when `name` is empty,
// longer than `max_size`, made only of dots, or holds another character (the
// name echoed bounded and printable).
inline absl::Status CheckName(absl::string_view what, absl::string_view name,
                              size_t max_size) {
  if (name.empty() || name.size() > max_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be 1-", max_size, " characters, not ", name.size()));
  }
  if (name.find_first_not_of('.') ==
      absl::string_view::npos) {  // "." and ".." name directories
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", Echo(name), " needs a character other than '.'"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", Echo(name),
                       " may hold only letters, digits, '.', '_', '-'"));
  }
  return absl::OkStatus();
}

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_NAMES_H_
