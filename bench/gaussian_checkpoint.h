// What the server benchmarks share: a stopwatch and a checkpoint of Gaussian
// weights (bench/server_benchmark.cc, bench/blob_cache_benchmark.cc).
#ifndef WEIGHTCAST_BENCH_GAUSSIAN_CHECKPOINT_H_
#define WEIGHTCAST_BENCH_GAUSSIAN_CHECKPOINT_H_

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/safetensors.h"
#include "common/tensor/tensor.h"

namespace weightcast {

using SteadyClock = std::chrono::steady_clock;

inline double Seconds(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// Gaussian float32 weights (sigma 0.02, seeded) as a safetensors checkpoint
// with `layers` [rows, cols] tensors named layerN.weight; aborts on failure.
inline std::string WriteCheckpoint(const std::string& path, int layers,
                                   int64_t rows, int64_t cols) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  Model model;
  for (int l = 0; l < layers; ++l) {
    std::vector<float> values(static_cast<size_t>(rows * cols));
    for (float& v : values) v = normal(rng);
    model.tensors.push_back(MakeFloat32Tensor(
        absl::StrCat("layer", l, ".weight"), {rows, cols}, values));
  }
  if (!WriteSafetensorsFile(model, path).ok()) std::abort();
  return path;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_BENCH_GAUSSIAN_CHECKPOINT_H_
