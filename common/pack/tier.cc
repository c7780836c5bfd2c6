#include "common/pack/tier.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"

namespace weightcast {

namespace {

// "qNN" alone; -1 otherwise.
int PlainQp(absl::string_view name) {
  int qp = -1;
  if (!absl::ConsumePrefix(&name, "q") || name.empty() ||
      name.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(name, &qp) || qp > 51) {
    return -1;
  }
  return qp;
}

// `value` units of 10^-decimals in decimal, without trailing zeros: 50, 2 ->
// "0.5"; 100, 2 -> "1".
std::string Decimal(int value, int decimals) {
  int unit = 1;
  for (int i = 0; i < decimals; ++i) unit *= 10;
  std::string text = absl::StrCat(value / unit);
  if (int fraction = value % unit; fraction != 0) {
    std::string digits = absl::StrCat(fraction + unit).substr(1);
    while (digits.back() == '0') digits.pop_back();
    absl::StrAppend(&text, ".", digits);
  }
  return text;
}

// `x` (digits, at most `whole_digits` of them before an optional dot and at
// most `decimals` after it) in units of 10^-decimals, if at most `most`; -1
// otherwise.
int ParseDecimal(absl::string_view x, size_t whole_digits, size_t decimals,
                 int most) {
  const size_t dot = x.find('.');
  const absl::string_view whole = x.substr(0, dot);
  const absl::string_view fraction =
      dot == absl::string_view::npos ? "" : x.substr(dot + 1);
  if (x.empty() || whole.size() > whole_digits || fraction.size() > decimals ||
      (dot != absl::string_view::npos && fraction.empty()) ||
      whole.find_first_not_of("0123456789") != absl::string_view::npos ||
      fraction.find_first_not_of("0123456789") != absl::string_view::npos) {
    return -1;
  }
  int value = 0;
  for (char c : whole) value = value * 10 + (c - '0');
  for (size_t i = 0; i < decimals; ++i)
    value = value * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
  return value <= most ? value : -1;
}

}  // namespace

bool CanBeRefined(const TierSpec& coarse) {
  return coarse.picture_codec == LayerCodec::kHevc && !coarse.lossless &&
         coarse.refines.empty() && (coarse.qp > 0 || coarse.budget_bytes > 0);
}

absl::StatusOr<std::string> RefinementTierName(absl::string_view coarse,
                                               absl::string_view fine) {
  const absl::StatusOr<TierSpec> spec = ParseTier(coarse);
  const int fine_qp = PlainQp(fine);
  if (!spec.ok() || !CanBeRefined(*spec) || fine_qp < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a refinement goes from a qNN or budget-N tier to a qNN tier, not ",
        Echo(coarse), " to ", Echo(fine)));
  }
  if (spec->budget_bytes == 0 && spec->qp <= fine_qp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "refinement ", Echo(absl::StrCat(coarse, "+", fine)),
        ": the first tier must be the coarser", " (higher QP) of the two"));
  }
  return absl::StrCat(coarse, "+", fine);
}

std::string BudgetTierName(uint64_t bytes) {
  for (const auto& [unit, suffix] :
       {std::pair<uint64_t, const char*>{1000000000, "g"},
        {1000000, "m"},
        {1000, "k"}}) {
    if (bytes % unit == 0) return absl::StrCat("budget-", bytes / unit, suffix);
  }
  return absl::StrCat("budget-", bytes);
}

std::string AccuracyTierName(int hundredths) {
  return absl::StrCat("acc-", Decimal(hundredths, 2));
}

std::string CosineTierName(int ten_thousandths) {
  return absl::StrCat("cos-", Decimal(ten_thousandths, 4));
}

namespace {

// The tier `name` denotes, with its canonical spelling in `name` (which may
// differ from the argument: "q022" is "q22").
absl::StatusOr<TierSpec> ParseAnySpelling(absl::string_view name) {
  TierSpec tier;
  tier.name = std::string(name);
  if (name == "lossless") {
    tier.picture_codec = LayerCodec::kZstdInt8;
    return tier;
  }
  if (name == "int8") {
    tier.picture_codec = LayerCodec::kRawInt8;
    return tier;
  }
  if (name == "hevc-lossless") {
    tier.lossless = true;
    return tier;
  }
  if (const int qp = PlainQp(name); qp >= 0) {
    tier.qp = qp;
    tier.name = absl::StrCat("q", qp);
    return tier;
  }
  if (const size_t plus = name.find('+'); plus != absl::string_view::npos) {
    const absl::string_view coarse = name.substr(0, plus),
                            fine = name.substr(plus + 1);
    absl::StatusOr<TierSpec> coarse_spec = ParseAnySpelling(coarse);
    const int fine_qp = PlainQp(fine);
    if (coarse_spec.ok() && fine_qp >= 0) {
      RETURN_IF_ERROR(
          RefinementTierName(coarse_spec->name, absl::StrCat("q", fine_qp))
              .status());
      tier.qp = fine_qp;
      tier.refines = coarse_spec->name;
      tier.name = absl::StrCat(tier.refines, "+q", fine_qp);
      return tier;
    }
    return RefinementTierName(coarse, fine).status();  // names what is wrong
  }
  // The tiers found by measuring: a decimal in fixed units after a prefix.
  struct Measured {
    const char* prefix;
    size_t whole_digits, decimals;
    int TierSpec::*field;
    std::string (*canonical)(int);
    const char* spelling;
  };
  static constexpr Measured kMeasured[] = {
      {"acc-", 3, 2, &TierSpec::max_top1_drop_hundredths, AccuracyTierName,
       "an accuracy tier is acc-X, X the top-1 points (0 to 100, at most two "
       "decimals) it may lose to the float model, e.g. acc-0.5"},
      {"cos-", 1, 4, &TierSpec::min_cosine_ten_thousandths, CosineTierName,
       "a cosine tier is cos-C, C the least mean cosine (0 to 1, at most four "
       "decimals) its outputs keep with the float model's, e.g. cos-0.99"}};
  for (const Measured& kind : kMeasured) {
    absl::string_view x = name;
    if (!absl::ConsumePrefix(&x, kind.prefix)) continue;
    const int value = ParseDecimal(x, kind.whole_digits, kind.decimals, 10000);
    if (value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tier ", Echo(name), ": ", kind.spelling));
    }
    tier.*kind.field = value;
    tier.name = kind.canonical(value);
    tier.float_codec = LayerCodec::kFloat16;
    return tier;
  }
  absl::string_view size = name;
  if (absl::ConsumePrefix(&size, "budget-") && !size.empty()) {
    double unit = 1;
    if (absl::ConsumeSuffix(&size, "k")) {
      unit = 1e3;
    } else if (absl::ConsumeSuffix(&size, "m")) {
      unit = 1e6;
    } else if (absl::ConsumeSuffix(&size, "g")) {
      unit = 1e9;
    }
    double value = 0;
    if (absl::SimpleAtod(size, &value) && value * unit >= 1 &&
        value * unit < 1e15 &&
        size.find_first_not_of("0123456789.") == absl::string_view::npos) {
      tier.budget_bytes = static_cast<uint64_t>(value * unit);
      tier.name = BudgetTierName(tier.budget_bytes);
      return tier;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tier ", Echo(name),
                   " is not one of qNN (NN = 0..51), budget-N[k|m|g] (bytes), "
                   "lossless, hevc-lossless, int8, C+qF (a refinement of C, a "
                   "qNN or budget-N tier), acc-X (top-1 within X points), "
                   "cos-C (output cosine at least C)"));
}

}  // namespace

absl::StatusOr<TierSpec> ParseTier(absl::string_view name) {
  if (name.size() > kMaxTierNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a tier name is at most ", kMaxTierNameBytes,
                     " characters; ", Echo(name), " is not a tier"));
  }
  ASSIGN_OR_RETURN(TierSpec tier, ParseAnySpelling(name));
  if (tier.name != name) {
    return absl::InvalidArgumentError(
        absl::StrCat("tier ", Echo(name), " is spelled '", tier.name, "'"));
  }
  return tier;
}

absl::StatusOr<std::vector<TierSpec>> ParseTierList(absl::string_view list) {
  std::vector<TierSpec> tiers;
  absl::flat_hash_set<std::string> seen;
  for (absl::string_view name :
       absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    ASSIGN_OR_RETURN(TierSpec tier,
                     ParseTier(absl::StripAsciiWhitespace(name)));
    if (!seen.insert(tier.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tier '", tier.name, "' is listed twice"));
    }
    if (tiers.size() == kMaxLadderTiers) {
      return absl::InvalidArgumentError(
          absl::StrCat("a ladder holds at most ", kMaxLadderTiers, " tiers"));
    }
    tiers.push_back(std::move(tier));
  }
  if (tiers.empty()) return absl::InvalidArgumentError("no tiers given");
  return tiers;
}

}  // namespace weightcast
