#include "server/metrics/blob_route.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kDigest(64, 'a');
const std::string kPath = "/v1/blobs/" + kDigest;

void ExpectPart(const RangeRequest& range, uint64_t first, uint64_t length) {
  EXPECT_EQ(range.kind, RangeRequest::kPart);
  EXPECT_EQ(range.first, first);
  EXPECT_EQ(range.length, length);
}

TEST(ParseRange, OneSatisfiableRangeIsAPart) {
  ExpectPart(ParseRange("bytes=0-0", 10), 0, 1);
  ExpectPart(ParseRange("bytes=2-5", 10), 2, 4);
  ExpectPart(ParseRange("bytes=4-", 10), 4, 6);
  ExpectPart(ParseRange("bytes=4-99", 10), 4, 6);  // last clamped to the end
  ExpectPart(ParseRange("bytes=-3", 10), 7, 3);
  ExpectPart(ParseRange("bytes=-30", 10), 0, 10);  // suffix longer: all of it
  ExpectPart(ParseRange("BYTES = 1-2 ", 10), 1, 2);
  ExpectPart(ParseRange("bytes=9-99999999999999999999999", 10), 9, 1);
}

TEST(ParseRange, NoRangeAnotherUnitOrSeveralRangesMeanTheWhole) {
  EXPECT_EQ(ParseRange("", 10).kind, RangeRequest::kWhole);
  EXPECT_EQ(ParseRange("items=0-1", 10).kind, RangeRequest::kWhole);
  EXPECT_EQ(ParseRange("bytes=0-1,4-5", 10).kind, RangeRequest::kWhole);
  EXPECT_EQ(ParseRange("bytes=0-1, -2", 10).kind, RangeRequest::kWhole);
}

TEST(ParseRange, MalformedOrPastTheEndIsUnsatisfiable) {
  for (const char* header :
       {"bytes", "bytes=", "bytes=-", "bytes=-0", "bytes=5-4", "bytes=10-",
        "bytes=10-20", "bytes=a-", "bytes=1-b", "bytes=+1-2", "bytes=1 -2",
        "bytes=0x1-2", "bytes=1-2-3", "bytes=0-1,x", "bytes=0-1,", "=0-1",
        "bytes=99999999999999999999999-", "bytes=--1"}) {
    EXPECT_EQ(ParseRange(header, 10).kind, RangeRequest::kUnsatisfiable)
        << header;
  }
  EXPECT_EQ(ParseRange("bytes=0-", 0).kind, RangeRequest::kUnsatisfiable);
  EXPECT_EQ(ParseRange("bytes=-1", 0).kind, RangeRequest::kUnsatisfiable);
  EXPECT_EQ(ParseRange("bytes=0-" + std::string(300, '9'), 10).kind,
            RangeRequest::kUnsatisfiable);  // longer than 256 bytes
}

TEST(BlobDigestOfPath, OnlySixtyFourLowercaseHexDigits) {
  EXPECT_EQ(BlobDigestOfPath(kPath), kDigest);
  for (const std::string& path :
       {std::string("/v1/blobs/"), "/v1/blobs/" + std::string(63, 'a'),
        "/v1/blobs/" + std::string(65, 'a'),
        "/v1/blobs/" + std::string(64, 'A'),
        "/v1/blobs/" + std::string(64, 'g'), kPath + "/", "/" + kPath,
        "/v1/blobs/../" + kDigest.substr(3),
        "/v1/blobs/%61" + kDigest.substr(1), "/v1/blobs//" + kDigest.substr(1),
        "/v1/blob/" + kDigest}) {
    EXPECT_FALSE(BlobDigestOfPath(path).has_value()) << path;
  }
}

BlobRequest Get(absl::string_view range = "") {
  BlobRequest request;
  request.method = "GET";
  request.path = kPath;
  request.range = range;
  return request;
}

TEST(AnswerBlob, WholeBlobCarriesETagAndImmutableCaching) {
  const BlobAnswer answer = AnswerBlob(Get(), 1000);
  EXPECT_EQ(answer.status, 200);
  EXPECT_EQ(answer.first, 0u);
  EXPECT_EQ(answer.length, 1000u);
  EXPECT_THAT(answer.head, HasSubstr("\r\nETag: \"" + kDigest + "\"\r\n"));
  EXPECT_THAT(answer.head,
              HasSubstr("\r\nCache-Control: public, max-age=31536000, "
                        "immutable\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("\r\nAccept-Ranges: bytes\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("\r\nContent-Length: 1000\r\n"));
  EXPECT_THAT(answer.head,
              HasSubstr("\r\nContent-Type: application/octet-stream\r\n"));
}

TEST(AnswerBlob, RangeGivesPartialContentWithContentRange) {
  const BlobAnswer answer = AnswerBlob(Get("bytes=100-199"), 1000);
  EXPECT_EQ(answer.status, 206);
  EXPECT_EQ(answer.first, 100u);
  EXPECT_EQ(answer.length, 100u);
  EXPECT_THAT(answer.head,
              HasSubstr("\r\nContent-Range: bytes 100-199/1000\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("\r\nContent-Length: 100\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("\r\nETag: \"" + kDigest + "\"\r\n"));
}

TEST(AnswerBlob, UnsatisfiableRangeIs416WithTheSize) {
  for (const char* range : {"bytes=1000-", "bytes=x", "bytes=5-1"}) {
    const BlobAnswer answer = AnswerBlob(Get(range), 1000);
    EXPECT_EQ(answer.status, 416) << range;
    EXPECT_EQ(answer.length, 0u);
    EXPECT_THAT(answer.head, HasSubstr("\r\nContent-Range: bytes */1000\r\n"));
  }
}

TEST(AnswerBlob, IfRangeOtherThanTheETagSendsTheWhole) {
  BlobRequest request = Get("bytes=0-9");
  const std::string other_etag = "\"" + std::string(64, 'b') + "\"";
  request.if_range = other_etag;  // the request holds views
  EXPECT_EQ(AnswerBlob(request, 1000).status, 200);
  const std::string etag = "\"" + kDigest + "\"";
  request.if_range = etag;
  EXPECT_EQ(AnswerBlob(request, 1000).status, 206);
}

TEST(AnswerBlob, MatchingIfNoneMatchIs304WithoutABody) {
  const std::string etag = "\"" + kDigest + "\"";
  for (const std::string& header :
       std::vector<std::string>{etag, "W/" + etag, "*", "\"x\", " + etag}) {
    BlobRequest request = Get();
    request.if_none_match = header;
    const BlobAnswer answer = AnswerBlob(request, 1000);
    EXPECT_EQ(answer.status, 304) << header;
    EXPECT_EQ(answer.length, 0u);
    EXPECT_THAT(answer.head, HasSubstr("\r\nETag: " + etag + "\r\n"));
    EXPECT_THAT(answer.head, Not(HasSubstr("Content-Length")));
  }
  BlobRequest other = Get();
  const std::string other_etag = "\"" + std::string(64, 'b') + "\"";
  other.if_none_match = other_etag;  // the request holds views
  EXPECT_EQ(AnswerBlob(other, 1000).status, 200);
}

TEST(AnswerBlob, HeadHasGetsHeadersAndNoBodyAndIgnoresRange) {
  BlobRequest request = Get("bytes=0-9");
  request.method = "HEAD";
  const BlobAnswer answer = AnswerBlob(request, 1000);
  EXPECT_EQ(answer.status, 200);
  EXPECT_EQ(answer.length, 0u);
  EXPECT_THAT(answer.head, HasSubstr("\r\nContent-Length: 1000\r\n"));
}

TEST(AnswerBlob, OtherMethodsAre405AndMissingBlobsUncacheable404) {
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
    BlobRequest request = Get();
    request.method = method;
    const BlobAnswer answer = AnswerBlob(request, 1000);
    EXPECT_EQ(answer.status, 405) << method;
    EXPECT_THAT(answer.head, HasSubstr("\r\nAllow: GET, HEAD\r\n"));
  }
  const BlobAnswer missing = AnswerBlob(Get(), std::nullopt);
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.head, HasSubstr("\r\nCache-Control: no-store\r\n"));
  BlobRequest bad = Get();
  bad.path = "/v1/blobs/../../etc/passwd";
  EXPECT_EQ(AnswerBlob(bad, 1000).status, 404);
}

TEST(AnswerBlob, UnauthorizedIs401AndNotCached) {
  const BlobAnswer answer = AnswerBlob(Get(), 1000, /*authorized=*/false);
  EXPECT_EQ(answer.status, 401);
  EXPECT_THAT(answer.head, HasSubstr("\r\nWWW-Authenticate: Bearer\r\n"));
  EXPECT_THAT(answer.head, HasSubstr("\r\nCache-Control: no-store\r\n"));
  EXPECT_THAT(answer.head, Not(HasSubstr("ETag")));
}

}  // namespace
}  // namespace weightcast
