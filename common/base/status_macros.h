// RETURN_IF_ERROR and ASSIGN_OR_RETURN for absl::Status / absl::StatusOr.
// Abseil 20220623 ships no status macros; these are the project's only
// definitions.
#ifndef WEIGHTCAST_COMMON_BASE_STATUS_MACROS_H_
#define WEIGHTCAST_COMMON_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define WEIGHTCAST_CONCAT_INNER_(a, b) a##b
#define WEIGHTCAST_CONCAT_(a, b) WEIGHTCAST_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if
// not OK.
#define RETURN_IF_ERROR(expr)                                \
  do {                                                       \
    ::absl::Status weightcast_status_ = (expr);              \
    if (!weightcast_status_.ok()) return weightcast_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, else
// moves the value into `lhs`, which may be a declaration (`auto x`) or an
// existing variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  WEIGHTCAST_ASSIGN_OR_RETURN_IMPL_( \
      WEIGHTCAST_CONCAT_(weightcast_statusor_, __LINE__), lhs, rexpr)

#define WEIGHTCAST_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                      \
  if (!statusor.ok()) return std::move(statusor).status();      \
  lhs = std::move(statusor).value()

#endif  // WEIGHTCAST_COMMON_BASE_STATUS_MACROS_H_
