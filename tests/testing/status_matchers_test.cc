#include "tests/testing/status_matchers.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/grpc_status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusIs, MatchesTheCodeAndTheMessageOfAStatus) {
  const absl::Status status =
      absl::InvalidArgumentError("tensor fc1.weight holds NaN");
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("fc1.weight")));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               "tensor fc1.weight holds NaN"));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kNotFound)));
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kInvalidArgument,
                                   HasSubstr("fc2"))));
  EXPECT_THAT(status, Not(IsOk()));
  EXPECT_THAT(absl::OkStatus(), IsOk());
}

TEST(StatusIs, ReadsTheStatusOfAStatusOr) {
  EXPECT_THAT(absl::StatusOr<int>(7), IsOk());
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("no version v9")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("v9")));
}

TEST(IsOkAndHolds, MatchesTheValueOfAnOkStatusOr) {
  EXPECT_THAT(absl::StatusOr<std::string>("q22"), IsOkAndHolds("q22"));
  EXPECT_THAT(absl::StatusOr<int>(7), IsOkAndHolds(::testing::Gt(5)));
  EXPECT_THAT(absl::StatusOr<int>(7), Not(IsOkAndHolds(8)));
  EXPECT_THAT(absl::StatusOr<int>(absl::NotFoundError("none")),
              Not(IsOkAndHolds(::testing::_)));
  const ::testing::Matcher<const absl::StatusOr<int>&> matcher =
      IsOkAndHolds(8);
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(matcher.MatchAndExplain(
      absl::StatusOr<int>(absl::NotFoundError("none")), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("NOT_FOUND: none"));
}

TEST(StatusIs, ReadsAGrpcStatusByItsCodeNumber) {
  EXPECT_THAT(
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                   "a device token cannot call the admin API"),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("admin API")));
  EXPECT_THAT(grpc::Status::OK, IsOk());
}

TEST(StatusIs, ExplainsAMismatchWithTheActualStatus) {
  const ::testing::Matcher<absl::Status> matcher =
      StatusIs(absl::StatusCode::kNotFound);
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(
      matcher.MatchAndExplain(absl::UnavailableError("draining"), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("UNAVAILABLE: draining"));
  EXPECT_EQ(::testing::DescribeMatcher<absl::Status>(
                StatusIs(absl::StatusCode::kNotFound)),
            "has status code NOT_FOUND and a message that is anything");
}

}  // namespace
}  // namespace weightcast
