// StatusIs and IsOk (status_matchers.h) for grpc::Status too: its codes are
// absl's, by number.
//   EXPECT_THAT(auth->Check("Bearer x", Role::kAdmin),
//   StatusIs(absl::StatusCode::kUnauthenticated));
// Header-only; for tests only.
#ifndef WEIGHTCAST_TESTS_TESTING_GRPC_STATUS_MATCHERS_H_
#define WEIGHTCAST_TESTS_TESTING_GRPC_STATUS_MATCHERS_H_

#include <grpcpp/support/status.h>

#include "tests/testing/status_matchers.h"

namespace weightcast {

template <>
struct StatusOf<grpc::Status> {
  static absl::Status Get(const grpc::Status& status) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
};

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_GRPC_STATUS_MATCHERS_H_
