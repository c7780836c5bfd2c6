// Rate-SQNR of the int8 quantization front ends, per layer and tier: per-tensor
// symmetric scales, per-channel symmetric scales, each + outliers (the largest
// weights in a float16 side list, outliers.h), and auto (the default:
// front_end.h's rule picks one per layer). For each 2-D or larger float tensor
// of a checkpoint and each tier (lossless = int8 + zstd, qNN = HEVC at QP NN)
// it prints bits per weight, SQNR and channel SQNR (fidelity.h) of each, the dB
// per-channel gains per extra bit, which one auto kept, and what the
// equal-slope alternative (per-channel when its SQNR gain exceeds 6.02 dB per
// extra bit) would have kept. Markdown on stdout; then, per layer, the
// smallest coding of any front end with SQNR and channel SQNR >= 15 dB (issue
// 21's goal: at <= 3 bits per weight). Run:
// bench/run_front_end_benchmark (generates bench/transformer_layers.py's layers
// first).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint/checkpoint.h"
#include "common/pack/front_end.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"
#include "common/pack/tier.h"

namespace weightcast {
namespace {

std::string Db(double db) {
  return std::isinf(db) ? (db > 0 ? "inf" : "-inf")
                        : absl::StrFormat("%.2f", db);
}

int Run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: front_end_benchmark CHECKPOINT [TIERS] [PRESET]\n");
    return 2;
  }
  auto model = ReadCheckpoint(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const std::string tier_list = argc > 2 ? argv[2] : "lossless,q22,q27,q32,q37";
  const std::string preset = argc > 3 ? argv[3] : kDefaultX265Preset;
  auto tiers = ParseTierList(tier_list);
  if (!tiers.ok()) {
    std::fprintf(stderr, "%s\n", tiers.status().ToString().c_str());
    return 2;
  }
  std::printf(
      "| layer | tier | per-tensor bpw / SQNR / ch. SQNR | per-channel bpw / "
      "SQNR / ch. SQNR | per-tensor + outliers | per-channel + outliers | "
      "dB per extra bit | auto | equal slope would keep "
      "|\n|---|---|---|---|---|---|---|---|---|\n");
  double seconds_fixed[4] = {0, 0, 0, 0}, seconds_auto = 0;
  // Per layer: the smallest coding with SQNR and channel SQNR >= 15 dB.
  struct Best {
    std::string layer, front_end, tier;
    double bpw = INFINITY, sqnr = 0, channel_sqnr = 0;
  };
  std::vector<Best> best;
  const char* kFrontEnds[4] = {"per-tensor", "per-channel",
                               "per-tensor + outliers",
                               "per-channel + outliers"};
  for (const Tensor& tensor : model->tensors) {
    if (tensor.shape.size() < 2 || !IsFloatingPoint(tensor.dtype)) continue;
    best.push_back({tensor.name, "-", "-"});
    for (const TierSpec& tier : *tiers) {
      LayerEncodeOptions options;
      options.codec = tier.picture_codec;
      options.hevc = {
          .qp = tier.qp, .lossless = tier.lossless, .preset = preset};
      std::vector<PackedLayer> fixed;
      for (int f = 0; f < 4; ++f) {
        options.scheme = f % 2 ? QuantScheme::kPerChannelSymmetric
                               : QuantScheme::kPerTensorSymmetric;
        options.outliers = f >= 2;
        const auto start = std::chrono::steady_clock::now();
        auto layer = EncodeLayer(tensor, options);
        seconds_fixed[fixed.size()] +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                          start)
                .count();
        if (!layer.ok()) {
          std::fprintf(stderr, "%s\n", layer.status().ToString().c_str());
          return 1;
        }
        const Fidelity& got = layer->fidelity;
        if (got.sqnr_db >= 15.0 && got.channel_sqnr_db >= 15.0 &&
            got.bits_per_weight < best.back().bpw &&
            (f < 2 || !layer->outliers.empty())) {
          best.back() = {tensor.name, kFrontEnds[f],
                         tier.name,   got.bits_per_weight,
                         got.sqnr_db, got.channel_sqnr_db};
        }
        fixed.push_back(*std::move(layer));
      }
      options.choose_scheme = true;
      const auto start = std::chrono::steady_clock::now();
      auto chosen = EncodeLayer(tensor, options);
      seconds_auto += std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
      if (!chosen.ok()) {
        std::fprintf(stderr, "%s\n", chosen.status().ToString().c_str());
        return 1;
      }
      const Fidelity& a = fixed[0].fidelity;
      const Fidelity& b = fixed[1].fidelity;
      const bool slope = b.sqnr_db - a.sqnr_db >
                         6.02 * (b.bits_per_weight - a.bits_per_weight);
      auto cell = [](const Fidelity& f) {
        return absl::StrFormat("%.3f / %s / %s", f.bits_per_weight,
                               Db(f.sqnr_db), Db(f.channel_sqnr_db));
      };
      // An outlier front end that found no outlier codes as the plain one.
      auto outlier_cell = [&](const PackedLayer& l) {
        return l.outliers.empty() ? std::string("(no outliers)")
                                  : absl::StrFormat("%s (%d)", cell(l.fidelity),
                                                    l.outliers.indices.size());
      };
      std::string picked = chosen->scheme == QuantScheme::kPerChannelSymmetric
                               ? "per-channel"
                               : "per-tensor";
      if (!chosen->outliers.empty()) picked += " + outliers";
      if (picked != "per-tensor") picked = absl::StrCat("**", picked, "**");
      const double extra_bits = b.bits_per_weight - a.bits_per_weight;
      absl::PrintF(
          "| %s | `%s` | %s | %s | %s | %s | %s | %s | %s |\n", tensor.name,
          tier.name, cell(a), cell(b), outlier_cell(fixed[2]),
          outlier_cell(fixed[3]),
          extra_bits > 0
              ? absl::StrFormat("%.1f", (b.sqnr_db - a.sqnr_db) / extra_bits)
              : "-",
          picked, slope ? "per-channel" : "per-tensor");
      std::fflush(stdout);
    }
  }
  std::printf(
      "\nencode seconds (wall, %s): per-tensor %.1f, per-channel %.1f, "
      "per-tensor + outliers %.1f, per-channel + outliers %.1f, auto %.1f\n",
      preset.c_str(), seconds_fixed[0], seconds_fixed[1], seconds_fixed[2],
      seconds_fixed[3], seconds_auto);
  std::printf(
      "\n| layer | smallest coding with SQNR and channel SQNR >= 15 dB | tier "
      "| "
      "bits/weight | SQNR / ch. SQNR dB | <= 3 bits/weight "
      "|\n|---|---|---|---|---|---|\n");
  for (const Best& b : best) {
    absl::PrintF("| %s | %s | %s | %s | %s | %s |\n", b.layer, b.front_end,
                 b.tier == "-" ? "-" : absl::StrCat("`", b.tier, "`"),
                 std::isinf(b.bpw) ? "-" : absl::StrFormat("%.3f", b.bpw),
                 std::isinf(b.bpw)
                     ? "-"
                     : absl::StrCat(Db(b.sqnr), " / ", Db(b.channel_sqnr)),
                 b.bpw <= 3.0 ? "yes" : "**no**");
  }
  return 0;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) { return weightcast::Run(argc, argv); }
