// SelectTier (declared in client.h, the SDK's public header): which tier of a
// version a pull takes, from the version's description alone. Pure;
// thread-safe.
#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/sdk/client.h"  // SelectTier, ModelInfo, TierSelector
#include "common/pack/tier.h"

namespace weightcast {

absl::StatusOr<std::string> SelectTier(const ModelInfo& info,
                                       const TierSelector& selector) {
  if (!selector.name.empty()) {
    // A refinement qC+qF is added to the version on its first request; qC must
    // be in the ladder.
    const std::string listed =
        ParseTier(selector.name).value_or(TierSpec{}).refines;
    for (const TierSummary& t : info.tiers) {
      if (t.name == selector.name || (!listed.empty() && t.name == listed))
        return selector.name;
    }
    // Not listed: a name that is no tier's spelling says so, and an accuracy
    // tier is added by the server on request (FAILED_PRECONDITION without a
    // bundle).
    const absl::StatusOr<TierSpec> spec = ParseTier(selector.name);
    if (!spec.ok()) return spec.status();
    if (IsAccuracyTier(*spec)) return selector.name;
    return absl::NotFoundError(absl::StrCat("tier '", selector.name,
                                            "' is not in the ladder of ",
                                            info.model, "/", info.version));
  }
  const bool by_accuracy = selector.max_accuracy_drop >= 0;
  const bool by_cosine = selector.min_output_cosine.has_value();
  const bool by_measure = by_accuracy || by_cosine;  // the smallest that fits
  const bool bounded = selector.max_bytes > 0 || selector.min_sqnr_db > 0 ||
                       selector.bits_per_second > 0 || by_measure;
  if (!bounded) {
    if (info.tiers.empty())
      return absl::NotFoundError("the version has no tiers");
    return info.tiers.front().name;
  }
  uint64_t budget = selector.max_bytes > 0 ? selector.max_bytes : UINT64_MAX;
  if (selector.bits_per_second > 0 && selector.within > absl::ZeroDuration()) {
    budget = std::min<uint64_t>(
        budget, static_cast<uint64_t>(selector.bits_per_second / 8 *
                                      absl::ToDoubleSeconds(selector.within)));
  }
  if (by_measure && !info.reference_accuracy) {
    return absl::FailedPreconditionError(absl::StrCat(
        info.model, "/", info.version,
        " has no accuracy figures: register it with an evaluation bundle"));
  }
  if (by_accuracy && !info.reference_accuracy->labelled) {
    return absl::FailedPreconditionError(absl::StrCat(
        info.model, "/", info.version,
        "'s evaluation bundle has no labels, so no top-1 to lose: its tiers "
        "show the output cosine"));
  }
  const double min_top1 =
      by_accuracy ? info.reference_accuracy->top1 - selector.max_accuracy_drop
                  : 0;
  const TierSummary* best = nullptr;
  for (const TierSummary& t : info.tiers) {
    if (t.state != "READY" || t.bytes > budget ||
        t.worst_layer_sqnr_db < selector.min_sqnr_db)
      continue;
    // A refinement's bytes leave out its coarse tier's: it is pulled by name or
    // as progressive.
    if (!ParseTier(t.name).value_or(TierSpec{}).refines.empty()) continue;
    if (by_accuracy && (!t.accuracy || t.accuracy->top1 < min_top1)) continue;
    if (by_cosine &&
        (!t.accuracy || !t.accuracy->output_cosine ||
         *t.accuracy->output_cosine < *selector.min_output_cosine)) {
      continue;
    }
    if (best == nullptr ||
        (by_measure ? t.bytes < best->bytes : t.bytes > best->bytes))
      best = &t;
  }
  if (best == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "no encoded tier of ", info.model, "/", info.version, " fits ",
        budget == UINT64_MAX ? std::string() : absl::StrCat(budget, " bytes"),
        selector.min_sqnr_db > 0
            ? absl::StrCat(" with SQNR >= ", selector.min_sqnr_db, " dB")
            : "",
        by_accuracy ? absl::StrFormat(" with top-1 >= %.2f %%", min_top1) : "",
        by_cosine ? absl::StrFormat(" with output cosine >= %.4f",
                                    *selector.min_output_cosine)
                  : "",
        " (tiers not yet encoded or measured do not count: warm them first)"));
  }
  return best->name;
}

}  // namespace weightcast
