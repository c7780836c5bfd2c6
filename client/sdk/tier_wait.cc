#include "client/sdk/tier_wait.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/status_macros.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

bool Bounded(const TierSelector& s) {
  return s.name.empty() &&
         (s.max_bytes > 0 || s.min_sqnr_db > 0 || s.bits_per_second > 0 ||
          s.max_accuracy_drop >= 0 || s.min_output_cosine.has_value());
}

bool IsRefinement(const std::string& tier) {
  return !ParseTier(tier).value_or(TierSpec{}).refines.empty();
}

}  // namespace

int PendingTiers(const ModelInfo& info, const TierSelector& selector,
                 bool count_not_encoded) {
  if (!Bounded(selector)) return 0;
  const bool by_accuracy = (selector.max_accuracy_drop >= 0 ||
                            selector.min_output_cosine.has_value()) &&
                           info.has_eval_bundle;
  int pending = 0;
  for (const TierSummary& t : info.tiers) {
    if (IsRefinement(t.name)) continue;  // never selected by a bound
    if (t.state == "ENCODING" ||
        (t.state == "NOT_ENCODED" && count_not_encoded) ||
        (t.state == "READY" && by_accuracy && !t.accuracy &&
         t.error.empty())) {  // an error: its accuracy could not be measured
      ++pending;
    }
  }
  return pending;
}

absl::StatusOr<std::pair<ModelInfo, std::string>> DescribeAndSelectTier(
    Client& client, const PullOptions& options, absl::Time deadline) {
  ASSIGN_OR_RETURN(ModelInfo info,
                   client.Describe(options.model, options.version));
  const absl::Time start = absl::Now();
  bool asked_to_warm = false, may_warm = true;
  absl::Duration poll = absl::Milliseconds(50);
  // Bounded by `deadline` (and the count, for a clock that does not move).
  for (int polls = 0; polls < 100000; ++polls) {
    // Warm marks the tiers ENCODING before it returns: a tier NOT_ENCODED
    // after it was evicted again (--cache-bytes) and is not waited for.
    const int pending =
        PendingTiers(info, options.tier, may_warm && !asked_to_warm);
    if (pending == 0) break;
    const bool not_encoded = std::any_of(
        info.tiers.begin(), info.tiers.end(), [](const TierSummary& t) {
          return t.state == "NOT_ENCODED" && !IsRefinement(t.name);
        });
    if (not_encoded && may_warm && !asked_to_warm) {
      asked_to_warm = true;
      const absl::Status warm = client.Warm(info.model, info.version, {});
      if (warm.code() == absl::StatusCode::kPermissionDenied ||
          warm.code() == absl::StatusCode::kUnauthenticated) {
        may_warm = false;  // a device: wait for what is encoding only
        continue;
      }
      RETURN_IF_ERROR(warm);
    }
    if (options.cancel && options.cancel->load())
      return absl::CancelledError("pull cancelled");
    if (absl::Now() + poll > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "waited ", absl::FormatDuration(absl::Now() - start), " for ",
          pending, " tier(s) of ", info.model, "/", info.version,
          " to be encoded and measured before selecting one"));
    }
    if (options.progress) {
      PullProgress progress;
      progress.tiers_pending = pending;
      progress.seconds = absl::ToDoubleSeconds(absl::Now() - start);
      options.progress(progress);
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(poll));
    poll = std::min(poll * 2, absl::Seconds(1));
    ASSIGN_OR_RETURN(info, client.Describe(info.model, info.version));
  }
  ASSIGN_OR_RETURN(std::string tier, SelectTier(info, options.tier));
  return std::make_pair(std::move(info), std::move(tier));
}

}  // namespace weightcast
