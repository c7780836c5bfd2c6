#include "common/pack/layer_tiles.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/bytes.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/hevc/de265_decoder.h"
#include "common/hevc/picture.h"
#include "common/pack/layer_codec.h"

namespace weightcast {

bool DecodesByTile(const PackedLayer& layer) {
  return layer.codec == LayerCodec::kHevc && layer.tiles.size() > 1 &&
         layer.mosaic.empty();
}

absl::Status CheckTiledLayer(const PackedLayer& layer) {
  ASSIGN_OR_RETURN(const int64_t elements,
                   CheckedNumElements(
                       layer.shape, absl::StrCat("layer '", layer.name, "'")));
  if (layer.codec != LayerCodec::kHevc || layer.tiles.empty() ||
      static_cast<size_t>(layer.grid.NumTiles()) != layer.tiles.size() ||
      layer.grid.rows * layer.grid.cols != elements) {
    return absl::DataLossError(absl::StrCat(
        "layer '", layer.name, "': tiles do not match the layer's shape"));
  }
  return absl::OkStatus();
}

absl::Status DecodeLayerTile(const PackedLayer& layer, size_t tile,
                             absl::Span<int8_t> values, int64_t first_row) {
  TileRect rect = layer.grid.Tile(tile);
  absl::StatusOr<Plane> plane = DecodeIntraPicture(
      layer.tiles[tile], PaddedSize(rect.cols), PaddedSize(rect.rows));
  if (!plane.ok()) {
    return absl::Status(plane.status().code(),
                        absl::StrCat("layer '", layer.name, "': tile ", tile,
                                     ": ", plane.status().message()));
  }
  rect.row0 -= first_row;
  if (rect.row0 < 0 || (rect.row0 + rect.rows) * layer.grid.cols >
                           static_cast<int64_t>(values.size())) {
    return absl::InternalError(absl::StrCat(
        "layer '", layer.name, "': tile ", tile, " is outside the rows given"));
  }
  InsertTile(*plane, rect, layer.grid.cols, values);
  return absl::OkStatus();
}

int64_t TileBand(const PackedLayer& layer, size_t tile) {
  return static_cast<int64_t>(tile) / layer.grid.ColTiles();
}

int64_t BandCount(const PackedLayer& layer) { return layer.grid.RowTiles(); }

std::pair<int64_t, int64_t> BandRows(const PackedLayer& layer, int64_t band) {
  const int64_t row0 = band * layer.grid.tile_rows;
  return {row0, std::min(layer.grid.tile_rows, layer.grid.rows - row0)};
}

absl::StatusOr<RebuiltTensor> FinishTiledDecode(const PackedLayer& layer,
                                                std::vector<int8_t> values) {
  RETURN_IF_ERROR(CheckDecodedDigest(
      layer, Sha256(AsBytes(absl::Span<const int8_t>(values)))));
  return RebuiltFromInt8(layer, std::move(values));
}

}  // namespace weightcast
