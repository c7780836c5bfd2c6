#include "common/hevc/picture.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"

namespace weightcast {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Near-equal split of n into the fewest parts of at most max_size.
int64_t PartSize(int64_t n, int64_t max_size) {
  if (n <= max_size) return std::max<int64_t>(n, 1);
  const int64_t even = CeilDiv(n, CeilDiv(n, max_size));
  const int64_t aligned = CeilDiv(even, kMinCuSize) * kMinCuSize;
  return aligned <= max_size ? aligned : even;
}

}  // namespace

TileRect TileGrid::Tile(int64_t index) const {
  const int64_t tr = index / ColTiles(), tc = index % ColTiles();
  TileRect rect;
  rect.row0 = tr * tile_rows;
  rect.col0 = tc * tile_cols;
  rect.rows = std::min(tile_rows, rows - rect.row0);
  rect.cols = std::min(tile_cols, cols - rect.col0);
  return rect;
}

TileGrid PlanTiles(int64_t rows, int64_t cols, int max_tile_size,
                   int64_t max_tile_pixels) {
  TileGrid grid{rows, cols, PartSize(rows, max_tile_size),
                PartSize(cols, max_tile_size)};
  // The longer side, then (if it reached kCtuSize first) the other, cut to
  // what the pixel cap leaves beside the side that stays.
  const auto cut = [&](int64_t n, int64_t* side, int64_t other) {
    if (*side * other <= max_tile_pixels) return;
    *side = std::min(
        *side,
        PartSize(n, std::max<int64_t>(kCtuSize, max_tile_pixels / other)));
  };
  if (grid.tile_rows >= grid.tile_cols) {
    cut(rows, &grid.tile_rows, grid.tile_cols);
    cut(cols, &grid.tile_cols, grid.tile_rows);
  } else {
    cut(cols, &grid.tile_cols, grid.tile_rows);
    cut(rows, &grid.tile_rows, grid.tile_cols);
  }
  return grid;
}

absl::Status ValidateTileGrid(const TileGrid& grid, int max_tile_size) {
  if (grid.rows <= 0 || grid.cols <= 0 || grid.tile_rows <= 0 ||
      grid.tile_cols <= 0 || grid.tile_rows > max_tile_size ||
      grid.tile_cols > max_tile_size || grid.tile_rows > grid.rows ||
      grid.tile_cols > grid.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tile grid ", grid.rows, "x", grid.cols, " in tiles of ",
        grid.tile_rows, "x", grid.tile_cols, " is not valid (tiles at most ",
        max_tile_size, " on a side)"));
  }
  return absl::OkStatus();
}

int PaddedSize(int64_t n) {
  return static_cast<int>(
      std::max<int64_t>(kCtuSize, CeilDiv(n, kMinCuSize) * kMinCuSize));
}

Plane ExtractTile(absl::Span<const int8_t> matrix, int64_t cols,
                  const TileRect& rect) {
  Plane plane;
  plane.width = PaddedSize(rect.cols);
  plane.height = PaddedSize(rect.rows);
  plane.pixels.resize(static_cast<size_t>(plane.width) * plane.height);
  for (int y = 0; y < plane.height; ++y) {
    const int64_t source_row = rect.row0 + std::min<int64_t>(y, rect.rows - 1);
    const int8_t* in = matrix.data() + source_row * cols + rect.col0;
    uint8_t* out = plane.pixels.data() + static_cast<size_t>(y) * plane.width;
    for (int64_t x = 0; x < rect.cols; ++x)
      out[x] = static_cast<uint8_t>(in[x] + 128);
    std::fill(out + rect.cols, out + plane.width,
              out[rect.cols - 1]);  // replicate right edge
  }
  return plane;
}

void InsertTile(const Plane& plane, const TileRect& rect, int64_t cols,
                absl::Span<int8_t> matrix) {
  assert(plane.width >= rect.cols && plane.height >= rect.rows);
  for (int64_t y = 0; y < rect.rows; ++y) {
    const uint8_t* in = plane.pixels.data() + y * plane.width;
    int8_t* out = matrix.data() + (rect.row0 + y) * cols + rect.col0;
    for (int64_t x = 0; x < rect.cols; ++x)
      out[x] = static_cast<int8_t>(in[x] - 128);
  }
}

std::pair<int64_t, int64_t> MatrixView(absl::Span<const int64_t> shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {1, shape[0]};
  int64_t cols = 1;
  for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  return {shape[0], cols};
}

}  // namespace weightcast
