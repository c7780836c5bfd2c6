#include "common/pack/mosaic.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

// Calls fn(matrix offset, picture offset) for each block row of `block_cols`
// values: the one copy loop both directions share.
template <typename Fn>
void ForEachBlockLine(int64_t rows, int64_t cols, const Mosaic& mosaic,
                      const MosaicPicture& picture, Fn fn) {
  const int64_t block = mosaic.block_rows * mosaic.block_cols;
  const int64_t blocks = rows * (cols / block);
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t top = (k / picture.grid_cols) * mosaic.block_rows;
    const int64_t left = (k % picture.grid_cols) * mosaic.block_cols;
    for (int64_t y = 0; y < mosaic.block_rows; ++y) {
      fn(k * block + y * mosaic.block_cols, (top + y) * picture.cols + left);
    }
  }
}

}  // namespace

absl::StatusOr<MosaicPicture> PlanMosaic(int64_t rows, int64_t cols,
                                         const Mosaic& mosaic) {
  const int64_t bh = mosaic.block_rows, bw = mosaic.block_cols;
  if (bh < 2 || bw < 2 || bh > kMaxMosaicBlockSide ||
      bw > kMaxMosaicBlockSide || rows < 1 || cols < 1 ||
      cols % (bh * bw) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a mosaic of ", bh, "x", bw, " blocks does not fit a ",
                     rows, "x", cols, " matrix (sides 2..", kMaxMosaicBlockSide,
                     ", a block's size dividing the columns)"));
  }
  const int64_t blocks = rows * (cols / (bh * bw));
  MosaicPicture picture;
  // The fewest blocks per picture row that make it at least as wide as high
  // (all in one row when even that is not).
  int64_t low = 1, high = blocks;
  while (low < high) {
    const int64_t mid = low + (high - low) / 2;
    if (mid * bw >= ((blocks + mid - 1) / mid) * bh) {
      high = mid;
    } else {
      low = mid + 1;
    }
  }
  picture.grid_cols = low;
  picture.cols = low * bw;
  picture.rows = ((blocks + low - 1) / low) * bh;
  return picture;
}

std::vector<int8_t> ToMosaic(absl::Span<const int8_t> matrix, int64_t cols,
                             const Mosaic& mosaic,
                             const MosaicPicture& picture) {
  std::vector<int8_t> out(static_cast<size_t>(picture.rows * picture.cols), 0);
  const int64_t rows = static_cast<int64_t>(matrix.size()) / cols;
  ForEachBlockLine(rows, cols, mosaic, picture, [&](int64_t from, int64_t to) {
    std::memcpy(out.data() + to, matrix.data() + from,
                static_cast<size_t>(mosaic.block_cols));
  });
  return out;
}

std::vector<int8_t> FromMosaic(absl::Span<const int8_t> picture_values,
                               int64_t rows, int64_t cols, const Mosaic& mosaic,
                               const MosaicPicture& picture) {
  std::vector<int8_t> out(static_cast<size_t>(rows * cols));
  ForEachBlockLine(rows, cols, mosaic, picture, [&](int64_t to, int64_t from) {
    std::memcpy(out.data() + to, picture_values.data() + from,
                static_cast<size_t>(mosaic.block_cols));
  });
  return out;
}

Mosaic FindMosaic(int64_t rows, int64_t cols, absl::Span<const float> values) {
  if (rows < 1 || cols < 8 || values.size() != static_cast<size_t>(rows * cols))
    return Mosaic();
  // Row r less its mean.
  const auto centred = [&](int64_t r) {
    const float* row = values.data() + r * cols;
    double mean = 0;
    for (int64_t c = 0; c < cols; ++c) mean += row[c];
    mean /= cols;
    std::vector<double> out(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) out[c] = row[c] - mean;
    return out;
  };
  // The looked-at rows, evenly spaced, each with the row after it.
  const int64_t taken = std::max<int64_t>(
      1, std::min({rows, kFindMosaicRows, kFindMosaicValues / cols}));
  std::vector<std::vector<double>> looked, next;
  for (int64_t i = 0; i < taken; ++i) {
    const int64_t r = i * rows / taken;
    looked.push_back(centred(r));
    if (r + 1 < rows) next.push_back(centred(r + 1));
  }
  const auto correlation = [](double ab, double aa, double bb) {
    return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
  };
  // Weights `lag` columns apart within a row.
  const auto row_lag = [&](int64_t lag) {
    double ab = 0, aa = 0, bb = 0;
    for (const std::vector<double>& row : looked) {
      for (int64_t c = 0; c + lag < cols; ++c) {
        ab += row[c] * row[c + lag];
        aa += row[c] * row[c];
        bb += row[c + lag] * row[c + lag];
      }
    }
    return correlation(ab, aa, bb);
  };
  // Weights in the same column of neighbouring rows (as the matrix has them).
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < next.size(); ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      ab += looked[i][c] * next[i][c];
      aa += looked[i][c] * looked[i][c];
      bb += next[i][c] * next[i][c];
    }
  }
  const double neighbour_rows = correlation(ab, aa, bb);
  int64_t best_lag = 0;
  double best = -1;
  for (int64_t lag = 4; lag <= std::min(kMaxMosaicBlockSide, cols / 2); ++lag) {
    if (cols % lag != 0) continue;
    const double r = row_lag(lag);
    if (r > best) {
      best = r;
      best_lag = lag;
    }
  }
  if (best_lag == 0 || best < kMinMosaicCorrelation || best < row_lag(1) ||
      best - neighbour_rows < kMinMosaicGain) {
    return Mosaic();
  }
  // Blocks as square as the columns allow, no higher than wide.
  int64_t height = 1;
  for (int64_t h = 2; h <= best_lag; ++h) {
    if ((cols / best_lag) % h == 0) height = h;
  }
  if (height < 2) return Mosaic();
  return Mosaic{height, best_lag};
}

}  // namespace weightcast
