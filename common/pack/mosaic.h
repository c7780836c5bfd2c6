// The mosaic picture layout of a matrix (issue 21). A picture layer's matrix
// view [rows, cols] puts a weight's neighbours along its row only; when a
// layer's inputs are an image (an MLP's first layer: 28x28 pixels) or
// flattened feature maps (a CNN's first linear layer: channels of HxW), the
// weights one image row up or down sit `width` columns away, out of reach of
// HEVC's prediction and transforms. The mosaic cuts each row into blocks of
// block_rows x block_cols (row-major within the row: cols = channels x
// block_rows x block_cols) and lays every row's blocks out in order in a
// near-square grid of blocks, so that the picture holds each block as the
// image it weighs. Measured on mlp's fc1 (bench/eval/mosaic_layout.py,
// docs/EVALUATION.md): at QP 34, 29,082 bytes and top-1 85.10 % against the
// matrix's 40,826 bytes and 82.12 % (float 85.53 %).
#ifndef WEIGHTCAST_COMMON_PACK_MOSAIC_H_
#define WEIGHTCAST_COMMON_PACK_MOSAIC_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// Block sides; none (0 x 0) is the plain matrix view.
struct Mosaic {
  int64_t block_rows = 0;
  int64_t block_cols = 0;
  bool empty() const { return block_rows == 0 && block_cols == 0; }
  bool operator==(const Mosaic& o) const {
    return block_rows == o.block_rows && block_cols == o.block_cols;
  }
};

constexpr int64_t kMaxMosaicBlockSide = 1024;

// The picture a mosaic makes of a [rows, cols] matrix: `grid_cols` blocks
// per picture row, the fewest that make it at least as wide as it is high;
// blocks past the last row's are zeros.
struct MosaicPicture {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t grid_cols = 0;
};

// INVALID_ARGUMENT unless both sides are in [2, kMaxMosaicBlockSide] and a
// block's size divides `cols`.
absl::StatusOr<MosaicPicture> PlanMosaic(int64_t rows, int64_t cols,
                                         const Mosaic& mosaic);

// The matrix (row-major, rows x cols) as the planned picture, and back.
std::vector<int8_t> ToMosaic(absl::Span<const int8_t> matrix, int64_t cols,
                             const Mosaic& mosaic,
                             const MosaicPicture& picture);
std::vector<int8_t> FromMosaic(absl::Span<const int8_t> picture_values,
                               int64_t rows, int64_t cols, const Mosaic& mosaic,
                               const MosaicPicture& picture);

// A mosaic found in the weights themselves, without data (a layer policy's
// "auto"): the column lag L, a divisor of `cols` in [4, kMaxMosaicBlockSide]
// with cols / L >= 2, at which the rows' weights correlate most with
// themselves, kept when that correlation is at least kMinMosaicCorrelation,
// at least the lag-1 one (a peak, not a smooth row), and more than that of
// neighbouring rows (what the matrix picture predicts from) by
// kMinMosaicGain. Blocks L wide and as high as the largest divisor of
// cols / L up to L; none (empty) otherwise. At most kFindMosaicRows rows,
// evenly spaced, and about kFindMosaicValues values are looked at. Trained
// layers (bench/eval/find_mosaic.py): mlp fc1 peaks at L = 28 (0.40,
// neighbouring rows 0.04), fc_cnn fc1 at L = 7 (0.28, rows 0.01); 3x3
// convolutions peak at L = 3, under the least lag (a 3x3 mosaic saved nothing:
// docs/EVALUATION.md), and hidden layers stay under 0.05.
inline constexpr double kMinMosaicCorrelation = 0.2;
inline constexpr double kMinMosaicGain = 0.15;
inline constexpr int64_t kFindMosaicRows = 256;
inline constexpr int64_t kFindMosaicValues = int64_t{1} << 20;
Mosaic FindMosaic(int64_t rows, int64_t cols, absl::Span<const float> values);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_MOSAIC_H_
