// Decoding an intra HEVC layer one tile at a time, for a caller that spreads
// the tiles of its layers over its own threads (the client's decode pool), so
// that one large layer keeps every core busy. CheckTiledLayer checks the layer
// before the caller sizes its int8 output (grid.rows x grid.cols),
// DecodeLayerTile decodes one tile into it, and FinishTiledDecode checks the
// decoded SHA-256 and builds the tensor: the same tensor and errors as
// DecodeLayer. A caller that writes the layer out as it goes decodes it a band
// of tiles at a time instead (TileBand, BandRows) and hashes the bands in
// order. Stateless; distinct tiles of one layer may be
// decoded concurrently into the same output.
#ifndef WEIGHTCAST_COMMON_PACK_LAYER_TILES_H_
#define WEIGHTCAST_COMMON_PACK_LAYER_TILES_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/pack/packed_layer.h"
#include "common/tensor/quantize.h"

namespace weightcast {

// True for intra HEVC layers (kHevc) of more than one tile and no mosaic (a
// mosaic's tile holds blocks of many rows: decoded whole, DecodeLayer).
bool DecodesByTile(const PackedLayer& layer);

// DATA_LOSS naming the layer when the grid does not match its shape or its
// tiles.
absl::Status CheckTiledLayer(const PackedLayer& layer);

// Decodes tile `tile` into its rectangle of `values`: the matrix's rows from
// `first_row` on (the whole layer's output, or a band of rows holding
// the tile). DATA_LOSS naming the layer and the tile for a damaged bitstream.
absl::Status DecodeLayerTile(const PackedLayer& layer, size_t tile,
                             absl::Span<int8_t> values, int64_t first_row = 0);

// A decode of the layer in bands of rows, the tiles of one row of the grid
// each (TileGrid::tile_rows rows, fewer in the last band), so that the int8
// values are held a band at a time: band `b` holds tiles [b * ColTiles(),
// (b + 1) * ColTiles()), and hashed in order the bands give the SHA-256
// FinishTiledDecode checks.
int64_t TileBand(const PackedLayer& layer, size_t tile);
int64_t BandCount(const PackedLayer& layer);
// The first row of band `band` and its row count.
std::pair<int64_t, int64_t> BandRows(const PackedLayer& layer, int64_t band);

// After every tile: DATA_LOSS naming the layer when the SHA-256 of `values`
// is not the one recorded.
absl::StatusOr<RebuiltTensor> FinishTiledDecode(const PackedLayer& layer,
                                                std::vector<int8_t> values);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_LAYER_TILES_H_
