// gMock matchers for statuses, so a test asserts the outcome it means:
//   EXPECT_THAT(store->Register(...),
//   StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fc1.weight")));
//   EXPECT_THAT(fleet->Report(report), IsOk());
//   EXPECT_THAT(SelectTier(info, selector), IsOkAndHolds("q22"));
// They match absl::Status and absl::StatusOr<T>; grpc_status_matchers.h adds
// grpc::Status. Another status type joins by specializing StatusOf<T>.
// Header-only; for tests only.
#ifndef WEIGHTCAST_TESTS_TESTING_STATUS_MATCHERS_H_
#define WEIGHTCAST_TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace weightcast {

// How the matchers read an absl::Status out of a value of type T.
template <typename T>
struct StatusOf;
template <>
struct StatusOf<absl::Status> {
  static absl::Status Get(const absl::Status& status) { return status; }
};
template <typename T>
struct StatusOf<absl::StatusOr<T>> {
  static absl::Status Get(const absl::StatusOr<T>& value) {
    return value.status();
  }
};

namespace status_matchers_internal {

class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code,
                  ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename T>
  bool MatchAndExplain(const T& value,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status status = StatusOf<T>::Get(value);
    *listener << "whose status is " << status;
    if (status.code() != code_) return false;
    ::testing::StringMatchResultListener inner;
    if (message_.MatchAndExplain(std::string(status.message()), &inner))
      return true;
    if (!inner.str().empty())
      *listener << ", and whose message " << inner.str();
    return false;
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has status code " << absl::StatusCodeToString(code_)
        << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have status code " << absl::StatusCodeToString(code_)
        << " or has a message that ";
    message_.DescribeNegationTo(os);
  }

 private:
  const absl::StatusCode code_;
  const ::testing::Matcher<const std::string&> message_;
};

// IsOkAndHolds: a StatusOr<T> that is OK and whose value `inner` matches.
template <typename StatusOrType>
class IsOkAndHoldsImpl : public ::testing::MatcherInterface<StatusOrType> {
 public:
  using Value = typename std::decay_t<StatusOrType>::value_type;
  template <typename InnerMatcher>
  explicit IsOkAndHoldsImpl(InnerMatcher&& inner)
      : inner_(::testing::SafeMatcherCast<const Value&>(
            std::forward<InnerMatcher>(inner))) {}

  bool MatchAndExplain(
      StatusOrType value,
      ::testing::MatchResultListener* listener) const override {
    if (!value.ok()) {
      *listener << "whose status is " << value.status();
      return false;
    }
    ::testing::StringMatchResultListener inner;
    const bool matches = inner_.MatchAndExplain(*value, &inner);
    *listener << "whose value " << ::testing::PrintToString(*value)
              << (matches ? " matches" : " does not match");
    if (!inner.str().empty()) *listener << ", " << inner.str();
    return matches;
  }
  void DescribeTo(std::ostream* os) const override {
    *os << "is OK and has a value that ";
    inner_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const override {
    *os << "is not OK or has a value that ";
    inner_.DescribeNegationTo(os);
  }

 private:
  const ::testing::Matcher<const Value&> inner_;
};

template <typename InnerMatcher>
class IsOkAndHoldsMatcher {
 public:
  explicit IsOkAndHoldsMatcher(InnerMatcher inner) : inner_(std::move(inner)) {}
  template <typename StatusOrType>
  operator ::testing::Matcher<StatusOrType>()
      const {  // NOLINT: implicit, as gMock's own
    return ::testing::Matcher<StatusOrType>(
        new IsOkAndHoldsImpl<const StatusOrType&>(inner_));
  }

 private:
  const InnerMatcher inner_;
};

}  // namespace status_matchers_internal

// The status (of a Status or a StatusOr) has `code` and a message `message`
// matches (a string is an exact match; HasSubstr, StartsWith, ... any string
// matcher).
template <typename MessageMatcher>
::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher>
StatusIs(absl::StatusCode code, MessageMatcher&& message) {
  return ::testing::MakePolymorphicMatcher(
      status_matchers_internal::StatusIsMatcher(
          code, ::testing::MatcherCast<const std::string&>(
                    std::forward<MessageMatcher>(message))));
}
// The status has `code`, whatever its message.
inline ::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher>
StatusIs(absl::StatusCode code) {
  return StatusIs(code, ::testing::A<std::string>());
}
// The status is OK (a StatusOr holds a value); a failure prints the status.
inline ::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher>
IsOk() {
  return StatusIs(absl::StatusCode::kOk);
}

// The StatusOr is OK and its value matches `inner` (a value is an Eq match).
template <typename InnerMatcher>
status_matchers_internal::IsOkAndHoldsMatcher<std::decay_t<InnerMatcher>>
IsOkAndHolds(InnerMatcher&& inner) {
  return status_matchers_internal::IsOkAndHoldsMatcher<
      std::decay_t<InnerMatcher>>(std::forward<InnerMatcher>(inner));
}

}  // namespace weightcast

#endif  // WEIGHTCAST_TESTS_TESTING_STATUS_MATCHERS_H_
