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

// A layer coded with column scales: describe gives its coded scheme and
// flags; the manifest gives the scheme of its int8 output (requantized per
// channel), which a client lays out before the layer arrives.
TEST(Manifest, ALayerWithColumnScalesIsWrittenPerChannel) {
  LayerRecord weighed;
  weighed.name = "fc1.weight";
  weighed.blob_sha256 = std::string(64, 'a');
  weighed.quant_scheme = "per-tensor-symmetric+outliers+cols";
  LayerRecord plain = weighed;
  plain.name = "fc2.weight";
  plain.quant_scheme = "per-tensor-symmetric+outliers";
  Manifest manifest;
  manifest.layers = {weighed, plain};
  v1::Manifest out;
  ToProto(manifest, &out);
  ASSERT_EQ(out.layers_size(), 2);
  EXPECT_EQ(out.layers(0).quant_scheme(),
            v1::QUANT_SCHEME_PER_CHANNEL_SYMMETRIC);
  EXPECT_TRUE(out.layers(0).column_scales());
  EXPECT_EQ(out.layers(1).quant_scheme(),
            v1::QUANT_SCHEME_PER_TENSOR_SYMMETRIC);
  EXPECT_FALSE(out.layers(1).column_scales());

  VersionRecord version;
  TierRecord tier;
  tier.tier = "acc-1";
  tier.state = TierState::kReady;
  tier.layers = {weighed, plain};
  v1::ModelVersion info;
  ToProto(version, {tier}, &info);
  ASSERT_EQ(info.tiers_size(), 1);
  ASSERT_EQ(info.tiers(0).layers_size(), 2);
  const v1::LayerStats& stats = info.tiers(0).layers(0);
  EXPECT_EQ(stats.quant_scheme(), v1::QUANT_SCHEME_PER_TENSOR_SYMMETRIC);
  EXPECT_TRUE(stats.outliers());
  EXPECT_TRUE(stats.column_scales());
  EXPECT_FALSE(info.tiers(0).layers(1).column_scales());
}

}  // namespace
}  // namespace weightcast
