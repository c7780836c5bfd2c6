// Selecting a tier by bytes, fidelity, accuracy or link speed needs the sizes
// (and accuracy) of encoded tiers. A pull that comes before the server has
// them (a version just registered) asks the server to encode the ladder and
// waits, polling Describe, until every tier that could be chosen is measured,
// then selects: the answer does not depend on when the pull came. Used by
// Client::Pull; thread-safe as the Client is.
#ifndef WEIGHTCAST_CLIENT_SDK_TIER_WAIT_H_
#define WEIGHTCAST_CLIENT_SDK_TIER_WAIT_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/sdk/client.h"

namespace weightcast {

// How many tiers of `info` a selection by `selector` still waits for: ladder
// tiers being encoded, not yet encoded (when `count_not_encoded`: the server
// was asked to encode them), and, when selecting by accuracy, READY tiers whose
// accuracy the server has not measured yet. Zero for a selection by name or by
// nothing (the server encodes such a tier on the pull itself). Pure.
int PendingTiers(const ModelInfo& info, const TierSelector& selector,
                 bool count_not_encoded);

// Describes options.model/options.version and selects a tier by
// options.tier, waiting as above: the first time tiers are NOT_ENCODED it asks
// the server to warm the ladder (a device token may not: then it waits for the
// tiers already encoding only). Polls with backoff up to 1 s until `deadline`
// (DEADLINE_EXCEEDED saying how many tiers were pending) or options.cancel
// (CANCELLED). After the warm call, tiers NOT_ENCODED again (evicted by the
// server's cache budget) are not waited for; options.progress is called with
// tiers_pending at every poll. Returns the description (of the version found by
// the first call) and the tier.
absl::StatusOr<std::pair<ModelInfo, std::string>> DescribeAndSelectTier(
    Client& client, const PullOptions& options, absl::Time deadline);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_TIER_WAIT_H_
