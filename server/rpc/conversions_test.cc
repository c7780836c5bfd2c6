#include "server/rpc/conversions.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ClientMessage, ServerPathsAreWithheldAndUrlsPass) {
  EXPECT_EQ(ClientMessage("cannot open /var/lib/weightcast/blobs/ab: denied"),
            "cannot open <server path>: denied (details in the server log)");
  EXPECT_EQ(ClientMessage("registry postgresql://wc:***@10.0.0.5:5432/wc is "
                          "unreachable"),
            "registry postgresql://wc:***@10.0.0.5:5432/wc is unreachable");
  // A path after a URL is still withheld; control characters never pass.
  const std::string mixed =
      ClientMessage("url http://a/b\x01x then file '/srv/data/x.pt'");
  EXPECT_THAT(mixed, HasSubstr("http://a/b?x"));
  EXPECT_THAT(mixed, HasSubstr("'<server path>'"));
  EXPECT_THAT(mixed, Not(HasSubstr("/srv")));
}

}  // namespace
}  // namespace weightcast
