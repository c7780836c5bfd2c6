#include "common/pack/mosaic.h"

#include <algorithm>
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

}  // namespace weightcast
