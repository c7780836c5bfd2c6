#include "server/rpc/stream_limiter.h"

#include <grpcpp/test/server_context_test_spouse.h>

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/grpc_status_matchers.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using Slot = std::unique_ptr<StreamLimiter::Slot>;

TEST(StreamLimiter,
     RefusesAStreamBeyondTheLimitPerClientAndCountsClientsApart) {
  StreamLimiter limiter(2, /*tokens_checked=*/false);
  grpc::Status refused;
  Slot a = limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5001", &refused);
  Slot b = limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5002",
                           &refused);  // another connection
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5003", &refused),
            nullptr);
  EXPECT_THAT(
      refused,
      StatusIs(
          absl::StatusCode::kResourceExhausted,
          HasSubstr(
              "already has 2 streams open (the server allows 2 per client")));
  grpc::Status other;
  EXPECT_NE(limiter.Acquire(std::nullopt, "ipv4:10.0.0.2:5001", &other),
            nullptr);
  EXPECT_NE(limiter.Acquire(std::nullopt, "ipv6:[::1]:5001", &other), nullptr);
  EXPECT_THAT(other, IsOk());
}

TEST(StreamLimiter, AnEndedStreamGivesItsSlotBack) {
  StreamLimiter limiter(1, /*tokens_checked=*/false);
  grpc::Status refused;
  Slot first = limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5001", &refused);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5001", &refused),
            nullptr);
  first.reset();
  EXPECT_NE(limiter.Acquire(std::nullopt, "ipv4:10.0.0.1:5001", &refused),
            nullptr);
}

TEST(StreamLimiter, AnUncheckedAuthorizationHeaderNeverMakesANewClient) {
  StreamLimiter limiter(1, /*tokens_checked=*/false);
  grpc::Status refused;
  Slot held = limiter.Acquire("Bearer a", "ipv4:10.0.0.1:5001", &refused);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(limiter.Acquire("Bearer b", "ipv4:10.0.0.1:5002", &refused),
            nullptr);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(StreamLimiter, WithTokensCheckedAClientIsItsToken) {
  StreamLimiter limiter(1, /*tokens_checked=*/true);
  grpc::Status refused;
  Slot a = limiter.Acquire("Bearer a", "ipv4:10.0.0.1:5001", &refused);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(limiter.Acquire("Bearer a", "ipv4:10.0.0.9:5001", &refused),
            nullptr);  // the same token elsewhere
  EXPECT_NE(limiter.Acquire("Bearer b", "ipv4:10.0.0.1:5002", &refused),
            nullptr);  // another token, same host
}

TEST(StreamLimiter, ReadsTheAuthorizationOfACallsContext) {
  StreamLimiter limiter(1, /*tokens_checked=*/true);
  grpc::ServerContext second;
  grpc::testing::ServerContextTestSpouse spouse(
      &second);  // holds the metadata: outlives its use
  spouse.AddClientMetadata("authorization", "Bearer a");
  grpc::Status refused;
  Slot held = limiter.Acquire("Bearer a", "", &refused);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(limiter.Acquire(second, &refused),
            nullptr);  // counted as token "Bearer a"
}

}  // namespace
}  // namespace weightcast
