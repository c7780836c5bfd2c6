// The x265 coding tools, measured on weights: for each tool set (one change
// from the preset as tuned for PSNR, or a pair) and each 2-D float layer of the
// checkpoints given, every layer is coded at QP 22, 27, 32 and 37 and its
// rate-distortion curve (bits per weight against the SQNR of the coded int8
// picture, i.e. the codec's own error) compared with the plain preset's by the
// Bjøntegaard method: the mean difference of log-rate over the SQNR range both
// curves cover, reported as "% bytes at equal SQNR" (negative = fewer bytes).
// Also the encode and the decode time relative to the plain preset, as CPU
// time of the process (all threads; steadier than wall time on a shared
// machine); the decode is the client's (DecodeLayer on one thread: libde265,
// the int8 values put together, their SHA-256), kDecodeRuns times per coded
// layer. Markdown on stdout.
// Run: bench/run_x265_tools_benchmark.
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint/checkpoint.h"
#include "common/pack/layer_codec.h"

namespace weightcast {
namespace {

constexpr int kQps[] = {22, 27, 32, 37};
constexpr int64_t kMinElements = 16384;  // smaller layers are not pictures
constexpr int kDecodeRuns = 3;

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Point {
  double sqnr_db;
  double log_bpw;
};
using Curve = std::vector<Point>;  // one per QP, SQNR descending with QP

// Linear interpolation of log-rate at `sqnr` on a curve sorted by SQNR.
double LogRateAt(const Curve& sorted, double sqnr) {
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sqnr <= sorted[i].sqnr_db) {
      const Point& a = sorted[i - 1];
      const Point& b = sorted[i];
      const double t = (sqnr - a.sqnr_db) / (b.sqnr_db - a.sqnr_db);
      return a.log_bpw + t * (b.log_bpw - a.log_bpw);
    }
  }
  return sorted.back().log_bpw;
}

// Mean log-rate difference (test − reference) over the common SQNR range; NaN
// when the ranges do not overlap.
double BdLogRate(Curve reference, Curve test) {
  auto by_sqnr = [](const Point& a, const Point& b) {
    return a.sqnr_db < b.sqnr_db;
  };
  std::sort(reference.begin(), reference.end(), by_sqnr);
  std::sort(test.begin(), test.end(), by_sqnr);
  const double lo = std::max(reference.front().sqnr_db, test.front().sqnr_db);
  const double hi = std::min(reference.back().sqnr_db, test.back().sqnr_db);
  if (!(hi > lo)) return std::nan("");
  constexpr int kSamples = 64;
  double sum = 0;
  for (int i = 0; i <= kSamples; ++i) {
    const double s = lo + (hi - lo) * i / kSamples;
    sum += LogRateAt(test, s) - LogRateAt(reference, s);
  }
  return sum / (kSamples + 1);
}

struct ToolSet {
  std::string label;
  std::vector<std::string> tools;
};

const std::vector<ToolSet>& ToolSets() {
  static const auto* sets = new std::vector<ToolSet>{
      {"preset (tune psnr)", {}},
      {"rdoq-level=0", {"rdoq-level=0"}},
      {"rdoq-level=1", {"rdoq-level=1"}},
      {"rdoq-level=2", {"rdoq-level=2"}},
      {"no-sao", {"no-sao"}},
      {"no-deblock", {"no-deblock"}},
      {"no-sao no-deblock", {"no-sao", "no-deblock"}},
      {"tskip", {"tskip"}},
      {"psy-rdoq=1", {"psy-rdoq=1.0"}},
      {"tu-intra-depth=3", {"tu-intra-depth=3"}},
      {"rd=4", {"rd=4"}},
      {"no-signhide", {"no-signhide"}},
      {"no-strong-intra-smoothing", {"no-strong-intra-smoothing"}},
      {"rdoq-level=2 no-deblock", {"rdoq-level=2", "no-deblock"}},
      {"rdoq-level=2 no-sao", {"rdoq-level=2", "no-sao"}},
      {"rdoq-level=2 no-sao no-deblock",
       {"rdoq-level=2", "no-sao", "no-deblock"}},
      {"rdoq-level=2 rd=4", {"rdoq-level=2", "rd=4"}},
      {"rdoq-level=2 tu-intra-depth=3", {"rdoq-level=2", "tu-intra-depth=3"}},
  };
  return *sets;
}

int Run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: x265_tools_benchmark CHECKPOINT... (env PRESET)\n");
    return 2;
  }
  const char* preset_env = std::getenv("PRESET");
  const std::string preset = preset_env ? preset_env : kDefaultX265Preset;
  // Per tool set: Σ elements·BD log-rate, Σ elements, encode seconds.
  std::map<std::string, std::vector<double>> per_layer;
  std::vector<double> weights;
  std::vector<std::string> layer_names;
  std::map<std::string, double> seconds, decode_seconds;
  std::map<std::string, std::vector<double>> q27_bpw, q27_sqnr;
  for (int c = 1; c < argc; ++c) {
    auto model = ReadCheckpoint(argv[c]);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    for (const Tensor& tensor : model->tensors) {
      if (tensor.shape.size() != 2 || !IsFloatingPoint(tensor.dtype) ||
          tensor.shape[0] * tensor.shape[1] < kMinElements)
        continue;
      std::map<std::string, Curve> curves;
      for (const ToolSet& set : ToolSets()) {
        for (int qp : kQps) {
          LayerEncodeOptions options;
          options.choose_scheme = true;  // decided from the int8 values
          options.hevc = {.qp = qp, .preset = preset, .tools = set.tools};
          const double start = CpuSeconds();
          auto layer = EncodeLayer(tensor, options);
          seconds[set.label] += CpuSeconds() - start;
          if (!layer.ok()) {
            std::fprintf(stderr, "%s %s: %s\n", tensor.name.c_str(),
                         set.label.c_str(), layer.status().ToString().c_str());
            return 1;
          }
          const double decode_start = CpuSeconds();
          for (int run = 0; run < kDecodeRuns; ++run) {
            if (!DecodeLayer(*layer, 1).ok()) {
              std::fprintf(stderr, "%s %s: decode failed\n",
                           tensor.name.c_str(), set.label.c_str());
              return 1;
            }
          }
          decode_seconds[set.label] += CpuSeconds() - decode_start;
          curves[set.label].push_back(
              {layer->fidelity.sqnr_int8_db,
               std::log(layer->fidelity.bits_per_weight)});
          if (qp == 27) {
            q27_bpw[set.label].push_back(layer->fidelity.bits_per_weight);
            q27_sqnr[set.label].push_back(layer->fidelity.sqnr_db);
          }
        }
      }
      const Curve& reference = curves[ToolSets()[0].label];
      for (const ToolSet& set : ToolSets())
        per_layer[set.label].push_back(BdLogRate(reference, curves[set.label]));
      weights.push_back(static_cast<double>(tensor.shape[0] * tensor.shape[1]));
      layer_names.push_back(absl::StrFormat("%s (%dx%d)", tensor.name,
                                            tensor.shape[0], tensor.shape[1]));
      std::fprintf(stderr, "measured %s\n", layer_names.back().c_str());
    }
  }
  if (weights.empty()) {
    std::fprintf(stderr, "no 2-D float layer of %d or more weights\n",
                 static_cast<int>(kMinElements));
    return 1;
  }
  const double reference_seconds = seconds[ToolSets()[0].label];
  const double reference_decode = decode_seconds[ToolSets()[0].label];
  absl::PrintF(
      "x265 preset %s, QPs 22/27/32/37, %d layers: %s\n\n"
      "| tools | bytes at equal SQNR (all layers, by weight) | per layer: "
      "best / worst | q27 bits/weight | q27 SQNR dB (float) | encode CPU time "
      "| decode CPU time |\n"
      "|---|---|---|---|---|---|---|\n",
      preset, static_cast<int>(weights.size()),
      absl::StrJoin(layer_names, ", "));
  for (const ToolSet& set : ToolSets()) {
    double sum = 0, total = 0, best = INFINITY, worst = -INFINITY;
    const std::vector<double>& bd = per_layer[set.label];
    for (size_t i = 0; i < bd.size(); ++i) {
      if (std::isnan(bd[i])) continue;
      sum += weights[i] * bd[i];
      total += weights[i];
      best = std::min(best, bd[i]);
      worst = std::max(worst, bd[i]);
    }
    auto percent = [](double log_ratio) {
      return absl::StrFormat("%+.1f %%", 100 * (std::exp(log_ratio) - 1));
    };
    double bpw = 0, sqnr = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      bpw += weights[i] * q27_bpw[set.label][i];
      sqnr += q27_sqnr[set.label][i] / weights.size();
    }
    double all_weights = 0;
    for (double w : weights) all_weights += w;
    absl::PrintF("| %s | %s | %s / %s | %.3f | %.2f | %.2fx | %.2fx |\n",
                 set.label, total > 0 ? percent(sum / total) : "-",
                 total > 0 ? percent(best) : "-",
                 total > 0 ? percent(worst) : "-", bpw / all_weights, sqnr,
                 seconds[set.label] / reference_seconds,
                 decode_seconds[set.label] / reference_decode);
  }
  return 0;
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) { return weightcast::Run(argc, argv); }
