// Rate-SQNR of the int8 quantization front ends, per layer and tier: per-tensor
// symmetric scales, per-channel symmetric scales, and auto (the default:
// front_end.h's rule picks one per layer). For each 2-D or larger float tensor
// of a checkpoint and each tier (lossless = int8 + zstd, qNN = HEVC at QP NN)
// it prints bits per weight, SQNR and channel SQNR (fidelity.h) of each, the dB
// per-channel gains per extra bit, which one auto kept, and what the
// equal-slope alternative (per-channel when its SQNR gain exceeds 6.02 dB per
// extra bit) would have kept. Markdown on stdout. Run:
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
      "SQNR / ch. SQNR | "
      "dB per extra bit | auto | equal slope would keep "
      "|\n|---|---|---|---|---|---|---|\n");
  double seconds_fixed[2] = {0, 0}, seconds_auto = 0;
  for (const Tensor& tensor : model->tensors) {
    if (tensor.shape.size() < 2 || !IsFloatingPoint(tensor.dtype)) continue;
    for (const TierSpec& tier : *tiers) {
      LayerEncodeOptions options;
      options.codec = tier.picture_codec;
      options.hevc = {
          .qp = tier.qp, .lossless = tier.lossless, .preset = preset};
      std::vector<PackedLayer> fixed;
      for (QuantScheme scheme : {QuantScheme::kPerTensorSymmetric,
                                 QuantScheme::kPerChannelSymmetric}) {
        options.scheme = scheme;
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
      const double extra_bits = b.bits_per_weight - a.bits_per_weight;
      absl::PrintF(
          "| %s | `%s` | %s | %s | %s | %s | %s |\n", tensor.name, tier.name,
          cell(a), cell(b),
          extra_bits > 0
              ? absl::StrFormat("%.1f", (b.sqnr_db - a.sqnr_db) / extra_bits)
              : "-",
          chosen->scheme == QuantScheme::kPerChannelSymmetric
              ? "**per-channel**"
              : "per-tensor",
          slope ? "per-channel" : "per-tensor");
      std::fflush(stdout);
    }
  }
  std::printf(
      "\nencode seconds (wall, %s): per-tensor %.1f, per-channel %.1f, auto "
      "%.1f\n",
      preset.c_str(), seconds_fixed[0], seconds_fixed[1], seconds_auto);
  return 0;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) { return weightcast::Run(argc, argv); }
