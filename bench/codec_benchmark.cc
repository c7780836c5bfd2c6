// Codec benchmarks: quantize, x265 encode and libde265 decode throughput per
// preset and QP, and the two baselines every compression claim is held against,
// side by side in one run:
//   int8 + zstd (lossless) and uniform requantization + zstd at the SQNR the
//   HEVC tier reached.
// Matrices: fc1 and fc2 of the demo's Fashion-MNIST MLP (real trained weights;
// path from WEIGHTCAST_BENCH_CHECKPOINT, default out/demo/mlp.pt) and an i.i.d.
// Gaussian 1024x1024. Counters: bpw = bits per weight, sqnr_db = SQNR against
// the float weights. Encode and decode use wall time: x265 runs its frame
// encoder on a thread of its own. Run: bench/run_codec_benchmark (trains the
// checkpoint if missing).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <random>

#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint.h"
#include "common/hevc/de265_decoder.h"
#include "common/hevc/x265_encoder.h"
#include "common/pack/layer_codec.h"
#include "common/pack/zstd_codec.h"
#include "common/tensor/fidelity.h"
#include "common/tensor/quantize.h"

namespace weightcast {
namespace {

struct Matrix {
  std::string name;
  Tensor tensor;
  std::vector<float> values;
  QuantizedTensor q;
};

const std::vector<Matrix>& Matrices() {
  static const std::vector<Matrix>* matrices = [] {
    auto* out = new std::vector<Matrix>;
    const char* env = std::getenv("WEIGHTCAST_BENCH_CHECKPOINT");
    auto model = ReadCheckpoint(env ? env : "out/demo/mlp.pt");
    if (model.ok()) {
      for (const Tensor& t : model->tensors) {
        if (t.name == "fc1.weight" || t.name == "fc2.weight")
          out->push_back({t.name.substr(0, 3), t});
      }
    } else {
      std::fprintf(stderr, "no checkpoint (%s): real-weight rows skipped\n",
                   model.status().ToString().c_str());
    }
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> gauss(1024 * 1024);
    for (float& v : gauss) v = normal(rng);
    out->push_back({"gauss", MakeFloat32Tensor("gauss", {1024, 1024}, gauss)});
    for (Matrix& m : *out) {
      m.values = ToFloat32(m.tensor).value();
      m.q = Quantize(m.name, m.tensor.shape, m.values,
                     QuantScheme::kPerTensorSymmetric)
                .value();
    }
    return out;
  }();
  return *matrices;
}

const char* const kPresets[] = {"ultrafast", "veryfast", "fast", "medium",
                                "slow"};  // index = arg

void SetCounters(benchmark::State& state, const Matrix& m, uint64_t bytes,
                 double sqnr_db) {
  state.counters["bpw"] = 8.0 * bytes / m.values.size();
  state.counters["sqnr_db"] = sqnr_db;
  state.SetBytesProcessed(state.iterations() *
                          m.values.size());  // int8 bytes in
  state.SetLabel(m.name);
}

void BM_Quantize(benchmark::State& state) {
  const Matrix& m = Matrices()[state.range(0)];
  const auto scheme = static_cast<QuantScheme>(state.range(1));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Quantize(m.name, m.tensor.shape, m.values, scheme));
  }
  state.SetBytesProcessed(state.iterations() * m.values.size() *
                          4);  // float bytes in
  state.SetLabel(absl::StrCat(m.name, " ", QuantSchemeName(scheme)));
}

// One HEVC layer encode on one thread (tiles in sequence), without the
// verification decode.
void BM_HevcEncode(benchmark::State& state) {
  const Matrix& m = Matrices()[state.range(0)];
  LayerEncodeOptions options;
  options.hevc = {static_cast<int>(state.range(2)), false,
                  kPresets[state.range(1)]};
  options.threads = 1;
  const PackedLayer layer =
      EncodeLayer(m.tensor, options).value();  // for bytes and SQNR
  const auto [rows, cols] = MatrixView(m.q.shape);
  const TileGrid grid = PlanTiles(rows, cols);
  for (auto _ : state) {
    for (int64_t i = 0; i < grid.NumTiles(); ++i) {
      benchmark::DoNotOptimize(EncodeIntraPicture(
          ExtractTile(m.q.values, cols, grid.Tile(i)), options.hevc));
    }
  }
  SetCounters(state, m, layer.PayloadBytes(), layer.fidelity.sqnr_db);
  state.SetLabel(
      absl::StrCat(m.name, " ", options.hevc.preset, " qp", options.hevc.qp));
}

// The client's decode of one layer on one thread, coded with the default
// tools (third argument 1) or with those before deblocking was turned off
// (0: rdoq-level=2 alone).
void BM_HevcDecode(benchmark::State& state) {
  const Matrix& m = Matrices()[state.range(0)];
  LayerEncodeOptions options;
  options.hevc.qp = static_cast<int>(state.range(1));
  if (state.range(2) == 0) options.hevc.tools = {"rdoq-level=2"};
  options.threads = 1;
  const PackedLayer layer = EncodeLayer(m.tensor, options).value();
  for (auto _ : state) benchmark::DoNotOptimize(DecodeLayer(layer, 1));
  SetCounters(state, m, layer.PayloadBytes(), layer.fidelity.sqnr_db);
  state.SetLabel(absl::StrCat(m.name, " qp", options.hevc.qp, " ",
                              absl::StrJoin(options.hevc.tools, " ")));
}

// Baseline 1: int8 + zstd, lossless.
void BM_Int8Zstd(benchmark::State& state) {
  const Matrix& m = Matrices()[state.range(0)];
  const auto bytes = absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(m.q.values.data()), m.q.values.size());
  std::vector<uint8_t> frame;
  for (auto _ : state)
    frame = ZstdCompress(bytes, static_cast<int>(state.range(1)));
  SetCounters(state, m, frame.size(), SqnrDb(m.values, Dequantize(m.q)));
  state.SetLabel(absl::StrCat(m.name, " zstd-", state.range(1)));
}

struct Requantized {
  uint64_t zstd_bytes = 0;
  double entropy_bits =
      0;  // Shannon entropy of the levels: what an ideal entropy coder needs
  double sqnr_db = 0;
};

// Uniform requantization of the int8 values with step k, zstd-coded.
Requantized Requantize(const Matrix& m, double step) {
  std::vector<uint8_t> levels(m.q.values.size());
  std::vector<int8_t> back(m.q.values.size());
  std::map<uint8_t, int64_t> histogram;
  for (size_t i = 0; i < levels.size(); ++i) {
    const long level = std::lround(m.q.values[i] / step);
    levels[i] = static_cast<uint8_t>(static_cast<int8_t>(level));
    back[i] = static_cast<int8_t>(
        std::clamp<long>(std::lround(level * step), -128, 127));
    ++histogram[levels[i]];
  }
  Requantized out;
  for (const auto& [level, count] : histogram) {
    const double p = static_cast<double>(count) / levels.size();
    out.entropy_bits -= count * std::log2(p);
  }
  out.zstd_bytes =
      ZstdCompress(levels, 19)
          .size();  // level 19: the strongest zstd; 3 is far worse here
  out.sqnr_db = SqnrDb(m.values, Dequantize(m.q, back));
  return out;
}

// Baseline 2: uniform requantization + zstd at the SQNR HEVC reaches at this QP
// (default preset), with HEVC's own figures on the same row (hevc_bpw,
// hevc_sqnr_db).
void BM_RequantZstdMatched(benchmark::State& state) {
  const Matrix& m = Matrices()[state.range(0)];
  LayerEncodeOptions options;
  options.hevc.qp = static_cast<int>(state.range(1));
  const PackedLayer hevc = EncodeLayer(m.tensor, options).value();
  const double target = hevc.fidelity.sqnr_db;
  double lo = 1.0,
         hi = 128.0;  // the largest step whose SQNR still reaches the target
  for (int i = 0; i < 25; ++i) {
    const double mid = std::sqrt(lo * hi);
    (Requantize(m, mid).sqnr_db >= target ? lo : hi) = mid;
  }
  Requantized result;
  for (auto _ : state) result = Requantize(m, lo);
  SetCounters(state, m, result.zstd_bytes, result.sqnr_db);
  state.counters["step"] = lo;
  state.counters["entropy_bpw"] = result.entropy_bits / m.values.size();
  state.counters["hevc_bpw"] = hevc.fidelity.bits_per_weight;
  state.counters["hevc_sqnr_db"] = hevc.fidelity.sqnr_db;
  state.SetLabel(absl::StrCat(m.name, " matched to hevc qp", options.hevc.qp));
}

void Args(benchmark::internal::Benchmark* b,
          const std::vector<std::vector<int64_t>>& extra) {
  for (size_t m = 0; m < Matrices().size(); ++m) {
    std::vector<std::vector<int64_t>> product = {{static_cast<int64_t>(m)}};
    for (const auto& values : extra) {
      std::vector<std::vector<int64_t>> next;
      for (const auto& prefix : product) {
        for (int64_t v : values) {
          next.push_back(prefix);
          next.back().push_back(v);
        }
      }
      product = next;
    }
    for (const auto& args : product) b->Args(args);
  }
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  using namespace weightcast;
  benchmark::Initialize(&argc, argv);
  const std::vector<int64_t> qps = {22, 27, 32, 37};
  const auto ms = benchmark::kMillisecond;
  Args(benchmark::RegisterBenchmark("Quantize", BM_Quantize)->Unit(ms),
       {{0, 1, 2, 3}});
  Args(benchmark::RegisterBenchmark("HevcEncode", BM_HevcEncode)
           ->Unit(ms)
           ->UseRealTime(),
       {{0, 1, 2, 3, 4}, {27}});
  Args(benchmark::RegisterBenchmark("HevcEncode", BM_HevcEncode)
           ->Unit(ms)
           ->UseRealTime(),
       {{1}, {22, 32, 37}});
  Args(benchmark::RegisterBenchmark("HevcDecode", BM_HevcDecode)
           ->Unit(ms)
           ->UseRealTime(),
       {qps, {0, 1}});
  Args(benchmark::RegisterBenchmark("Int8Zstd", BM_Int8Zstd)->Unit(ms),
       {{3, 19}});
  Args(benchmark::RegisterBenchmark("RequantZstdMatched", BM_RequantZstdMatched)
           ->Unit(ms),
       {qps});
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
