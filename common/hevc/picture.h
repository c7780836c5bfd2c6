// Weight matrices as pictures: an int8 matrix is cut into tiles, each tile
// becomes one 8-bit 4:0:0 plane (pixel = value + 128), padded by edge
// replication up to the encoder's minimum size. Padding is dropped again on the
// way back, so it never reaches a model. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_HEVC_PICTURE_H_
#define WEIGHTCAST_COMMON_HEVC_PICTURE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace weightcast {

// The coding tree unit size every encoder in the process uses (x265 requires
// one value per process). A picture is never smaller than one CTU in either
// direction.
inline constexpr int kCtuSize = 32;
// Pictures are padded to a multiple of the smallest coding unit.
inline constexpr int kMinCuSize = 8;
inline constexpr int kDefaultMaxTileSize = 4096;
// An x265 encoder's buffers follow the picture's area, so tiles are also cut
// to at most this many pixels: a tile job's memory is then the same
// for a 1024-wide and a 4096-wide layer, whatever the model's size. 1 M pixels
// also keeps a tile's decode short: a pull ends about one tile's decode after
// its last byte (docs/BENCHMARKS.md: no measurable cost in bytes against 4 M).
inline constexpr int64_t kDefaultMaxTilePixels = int64_t{1024} * 1024;

// An 8-bit luma picture, row-major, stride == width.
struct Plane {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

struct TileRect {
  int64_t row0 = 0, col0 = 0, rows = 0, cols = 0;
};

// How a rows × cols matrix is cut: tiles of tile_rows × tile_cols, the last
// row/column of tiles holding the remainder. Tile index order is row-major.
struct TileGrid {
  int64_t rows = 0, cols = 0;
  int64_t tile_rows = 0, tile_cols = 0;

  int64_t RowTiles() const {
    return tile_rows ? (rows + tile_rows - 1) / tile_rows : 0;
  }
  int64_t ColTiles() const {
    return tile_cols ? (cols + tile_cols - 1) / tile_cols : 0;
  }
  int64_t NumTiles() const { return RowTiles() * ColTiles(); }
  TileRect Tile(int64_t index) const;
};

// Splits a matrix into the fewest tiles no larger than max_tile_size on a side,
// of near-equal size (a multiple of kMinCuSize where possible), so that tiles
// encode in parallel evenly. A tile of more than max_tile_pixels is cut
// further, its longer side first (never below kCtuSize). Decoders accept any
// grid ValidateTileGrid accepts, so the plan is the encoder's choice alone.
TileGrid PlanTiles(int64_t rows, int64_t cols,
                   int max_tile_size = kDefaultMaxTileSize,
                   int64_t max_tile_pixels = kDefaultMaxTilePixels);

// Checks a grid read from untrusted input: positive sizes, tiles within limits,
// count sane.
absl::Status ValidateTileGrid(const TileGrid& grid, int max_tile_size);

// The padded picture size for a tile dimension: a multiple of kMinCuSize, at
// least kCtuSize.
int PaddedSize(int64_t n);

// Cuts `rect` out of the row-major `matrix` (with `cols` columns) as a padded
// picture.
Plane ExtractTile(absl::Span<const int8_t> matrix, int64_t cols,
                  const TileRect& rect);

// Writes the unpadded part of `plane` back into `rect` of `matrix`.
void InsertTile(const Plane& plane, const TileRect& rect, int64_t cols,
                absl::Span<int8_t> matrix);

// The matrix a tensor of `shape` is coded as: [d0, d1·d2·…] (4-D conv [out,
// in·kh·kw]); 1-D [n] is [1, n]; a scalar is [1, 1].
std::pair<int64_t, int64_t> MatrixView(absl::Span<const int64_t> shape);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_PICTURE_H_
