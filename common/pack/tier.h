// Tiers: a tier is a named recipe for the picture layers of a model ("q27":
// HEVC at QP 27; "budget-2m": HEVC with a QP per layer chosen so the whole
// model fits in 2,000,000 bytes; "lossless": int8 + zstd; "q37+q22": a
// refinement, q22 coded as P pictures on q37's pictures, for progressive
// delivery). layer_policy.h decides which tensors are picture layers. Plain
// values and pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_PACK_TIER_H_
#define WEIGHTCAST_COMMON_PACK_TIER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pack/layer_codec.h"

namespace weightcast {

struct TierSpec {
  std::string name;
  LayerCodec picture_codec =
      LayerCodec::kHevc;  // what picture layers get at this tier
  int qp = 0;             // HEVC tiers
  bool lossless = false;  // HEVC lossless tier
  uint64_t budget_bytes =
      0;  // budget tiers: the whole model's packed bytes; the QP is per layer
  // Refinement tiers ("q37+q22", "budget-100k+q22"): each picture layer is P
  // pictures at `qp` (or finer) predicted from the same version's layer at the
  // coarser tier `refines` (qNN or budget-N), which a client receives first and
  // can use while the refinement arrives. Empty: not a refinement.
  std::string refines;
  // Accuracy tiers ("acc-0.5"): the smallest budget allocation whose measured
  // top-1 on the version's evaluation bundle is within this many hundredths of
  // a point of the float model's, found by the server; -1: not one.
  int max_top1_drop_hundredths = -1;
  // Cosine tiers ("cos-0.99"): the same search for the smallest allocation
  // whose outputs keep at least this mean cosine (in ten-thousandths) with the
  // float model's on the bundle's inputs, labels or not; -1: not one.
  int min_cosine_ten_thousandths = -1;
  // What float-class layers (biases, norms) are coded as: float32, or in
  // accuracy tiers, whose every candidate is measured on the bundle, float16
  // (common/pack/layer_codec.h keeps float32 for a tensor float16 cannot hold).
  LayerCodec float_codec = LayerCodec::kFloat32;
};

inline constexpr char kDefaultTierLadder[] = "lossless,q22,q27,q32,q37";
// Longest tier name; most tiers in one ladder (a server may set a lower cap:
// --max-tiers).
inline constexpr size_t kMaxTierNameBytes = 64;
inline constexpr size_t kMaxLadderTiers = 256;

// "qNN" (HEVC at QP NN, 0..51), "budget-N[k|m|g]" (HEVC within N bytes, decimal
// units), "hevc-lossless", "lossless" (int8 + zstd), "int8" (raw int8), "C+qF"
// (a refinement of C, a qNN tier of a QP above F or a budget-N tier, to qF),
// "acc-X" (the smallest model whose measured top-1 is within X points of the
// float model's, X = 0..100 in steps of 0.01; needs an evaluation bundle with
// labels), "cos-C" (the smallest model whose outputs keep a mean cosine of at
// least C with the float model's, C = 0..1 in steps of 0.0001; needs an
// evaluation bundle, with labels or inputs only).
// Each tier has one spelling: "q22", not "q022"; budgets in the largest unit
// that divides them exactly ("budget-1500", "budget-2m", not "budget-1.5k" or
// "budget-2000k"); "acc-0.5", "acc-1" (not "acc-.5", "acc-1.0"); "cos-0.99"
// (not "cos-.99", "cos-0.990"); another spelling is INVALID_ARGUMENT naming
// the canonical one.
absl::StatusOr<TierSpec> ParseTier(absl::string_view name);
// The canonical name of the budget tier of `bytes` (> 0): "budget-2m",
// "budget-1500".
std::string BudgetTierName(uint64_t bytes);
// The canonical name of the accuracy tier of `hundredths` (0..10000) of a
// point: 50 -> "acc-0.5", 100 -> "acc-1".
std::string AccuracyTierName(int hundredths);
// The canonical name of the cosine tier of `ten_thousandths` (0..10000):
// 9900 -> "cos-0.99", 10000 -> "cos-1".
std::string CosineTierName(int ten_thousandths);
// Tiers the server finds by measuring candidates on the evaluation bundle:
// acc-X (by top-1) and cos-C (by output cosine).
inline bool IsAccuracyTier(const TierSpec& tier) {
  return tier.max_top1_drop_hundredths >= 0 ||
         tier.min_cosine_ten_thousandths >= 0;
}
// The refinement tier that brings `coarse` to `fine` ("q37", "q22" ->
// "q37+q22"). INVALID_ARGUMENT unless `fine` is a qNN tier and `coarse` a qNN
// tier of a higher QP or a budget-N tier.
absl::StatusOr<std::string> RefinementTierName(absl::string_view coarse,
                                               absl::string_view fine);
// True for a tier a refinement can start from: a lossy qNN tier (N > 0) or a
// budget-N tier.
bool CanBeRefined(const TierSpec& coarse);
// A comma-separated list of tier names; names must not repeat; at most
// kMaxLadderTiers.
absl::StatusOr<std::vector<TierSpec>> ParseTierList(absl::string_view list);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_TIER_H_
