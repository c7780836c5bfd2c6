#include "client/sdk/layer_output.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/sdk/base_store.h"
#include "client/sdk/decode_pool.h"
#include "common/base/file.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/pack/layer_codec.h"
#include "common/pack/layer_tiles.h"
#include "common/pack/packed_layer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fresh_dir.h"

namespace weightcast {
namespace {

using ::testing::HasSubstr;

// A 150 x 200 layer, N(0, 0.02^2) with 8 weights x20 (the outlier front end),
// coded in tiles of at most 64 x 64: 3 bands of 4 tiles.
PackedLayer TiledLayer(QuantScheme scheme,
                       const std::string& name = "embed.weight",
                       unsigned seed = 7, bool column_scales = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(150 * 200);
  for (float& v : values) v = normal(rng);
  for (int i = 0; i < 8; ++i) {
    float& v = values[(i * 7919 + 13) % values.size()];
    v = (v < 0 ? -1.0f : 1.0f) * (0.12f + std::abs(v)) * 20.0f;
  }
  LayerEncodeOptions options;
  options.codec = LayerCodec::kHevc;
  options.scheme = scheme;
  options.outliers = true;
  options.hevc = {.qp = 27, .lossless = false, .preset = "ultrafast"};
  options.max_tile_size = 64;
  if (column_scales) {  // 0.5 .. 2.1, a scale per pair of columns
    for (int c = 0; c < 100; ++c)
      options.column_scales.push_back(0.5f + 0.4f * (c % 5));
    options.column_scale_repeat = 2;
  }
  auto layer =
      EncodeLayer(MakeFloat32Tensor(name, {150, 200}, values), options);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return *std::move(layer);
}

std::vector<TensorLayout> Layout(const std::vector<PackedLayer>& layers,
                                 OutputKind kind) {
  std::vector<TensorLayout> out;
  for (const PackedLayer& layer : layers) {
    if (kind == OutputKind::kFloat) {
      out.push_back({layer.name, DType::kFloat32, layer.shape, 150 * 200 * 4});
      continue;
    }
    // A layer with column scales is requantized per channel for int8.
    const QuantScheme scheme = layer.column_scales.empty()
                                   ? layer.scheme
                                   : QuantScheme::kPerChannelSymmetric;
    for (const Int8OutputPart& part :
         Int8OutputParts(layer.name, scheme, layer.shape)) {
      int64_t elements = 1;
      for (int64_t d : part.shape) elements *= d;
      out.push_back({part.name, part.dtype, part.shape,
                     static_cast<uint64_t>(elements) * DTypeSize(part.dtype)});
    }
  }
  return out;
}

// The layers' decodes written whole by LayerOutput::Write (the pull's path
// before bands, and still its path for other layers) into `path`.
void WriteWhole(const std::vector<PackedLayer>& layers, OutputKind kind,
                const std::string& path) {
  auto writer =
      CheckpointStreamWriter::Create(path, Layout(layers, kind)).value();
  for (const PackedLayer& layer : layers) {
    ASSERT_TRUE(LayerOutput(writer.get(), kind)
                    .Write(DecodeLayer(layer, 1).value())
                    .ok());
  }
  ASSERT_TRUE(writer->Commit().ok());
}

// The manifest entry of a packed layer of `bytes`.
v1::ManifestLayer EntryOf(const std::string& name,
                          const std::vector<uint8_t>& bytes) {
  v1::ManifestLayer expected;
  expected.set_name(name);
  const Sha256Digest digest = Sha256(bytes);
  expected.set_blob_sha256(std::string(digest.begin(), digest.end()));
  expected.set_bytes(bytes.size());
  return expected;
}

// Hands `bytes` to the pool as layer `index` of entry `expected` arriving in
// chunks of `chunk` bytes (Arriving with each longer prefix), then submits
// it; submits it at once when `chunk` is 0.
void Deliver(DecodePool& pool, size_t index, const std::vector<uint8_t>& bytes,
             const v1::ManifestLayer& expected, size_t chunk) {
  const std::string all(bytes.begin(), bytes.end());
  for (size_t end = chunk; chunk > 0 && end < all.size(); end += chunk)
    pool.Arriving(index, absl::string_view(all).substr(0, end), expected);
  pool.Submit(index, all, expected);
}

// The layers (as `bytes`, their serializations) through one decode pool of
// `threads` workers into `path`, band by band, arriving in chunks of `chunk`
// bytes (0: submitted whole); the first error of the pool's results.
absl::Status PullBandByBand(const std::vector<std::vector<uint8_t>>& bytes,
                            const std::vector<PackedLayer>& layers,
                            OutputKind kind, const std::string& path,
                            int threads, size_t chunk = 0) {
  auto writer =
      CheckpointStreamWriter::Create(path, Layout(layers, kind)).value();
  const LayerOutput output(writer.get(), kind);
  std::atomic<int> began = 0;
  BaseStore bases("");
  absl::Status result;
  {
    DecodePool pool(
        threads, layers.size(), /*hold=*/false, &bases,
        [](size_t, RebuiltTensor) {
          return absl::InternalError("taken whole, not band by band");
        },
        /*tile_jobs=*/true,
        [&](size_t, const PackedLayer& parsed) {
          ++began;  // on the worker that starts the layer
          return output.BeginRows(parsed);
        });
    for (size_t i = 0; i < layers.size(); ++i)
      Deliver(pool, i, bytes[i], EntryOf(layers[i].name, bytes[i]), chunk);
    pool.Wait();
    for (size_t i = 0; i < layers.size() && result.ok(); ++i)
      result = pool.Take(i).status();
  }
  EXPECT_EQ(began, static_cast<int>(layers.size()));
  if (!result.ok()) {
    EXPECT_THAT(writer->Commit().message(), HasSubstr("never written"));
    return result;
  }
  return writer->Commit();
}
absl::Status PullBandByBand(const std::vector<uint8_t>& bytes,
                            const PackedLayer& layer, OutputKind kind,
                            const std::string& path, int threads,
                            size_t chunk = 0) {
  return PullBandByBand(std::vector<std::vector<uint8_t>>{bytes}, {layer}, kind,
                        path, threads, chunk);
}

// PullBandByBand into `path` succeeds and gives the bytes of `expected_path`,
// the layers submitted whole and arriving in chunks of 1000 bytes.
void ExpectBandsAsWhole(const std::vector<std::vector<uint8_t>>& bytes,
                        const std::vector<PackedLayer>& layers, OutputKind kind,
                        const std::string& path,
                        const std::string& expected_path, int threads) {
  for (const size_t chunk : {size_t{0}, size_t{1000}}) {
    SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
    const absl::Status pulled =
        PullBandByBand(bytes, layers, kind, path, threads, chunk);
    ASSERT_TRUE(pulled.ok()) << pulled;
    EXPECT_EQ(ReadFileBytes(path).value(),
              ReadFileBytes(expected_path).value());
  }
}

// The same bytes as the whole layer's decode written by LayerOutput::Write
// (the pull's path before bands, and still its path for other layers), for
// float and int8 outputs of both file kinds, with outliers, per-tensor and
// per-channel scales, and with fewer and more workers than a band's tiles.
TEST(LayerOutput, BandByBandWritesTheBytesOfTheWholeLayer) {
  const std::string dir = FreshDir("layer_output_bands");
  for (const QuantScheme scheme :
       {QuantScheme::kPerTensorSymmetric, QuantScheme::kPerChannelSymmetric}) {
    const PackedLayer layer = TiledLayer(scheme);
    ASSERT_TRUE(DecodesByTile(layer));
    ASSERT_EQ(BandCount(layer), 3);
    ASSERT_EQ(layer.grid.ColTiles(), 4);
    ASSERT_EQ(layer.outliers.indices.size(), 8u);
    const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
    for (const OutputKind kind : {OutputKind::kFloat, OutputKind::kInt8}) {
      for (const std::string ext : {".safetensors", ".pt"}) {
        const std::string expected_path = dir + "/whole" + ext;
        WriteWhole({layer}, kind, expected_path);
        for (const int threads : {1, 3, 6}) {
          SCOPED_TRACE(::testing::Message()
                       << QuantSchemeName(scheme) << ext << " int8 "
                       << (kind == OutputKind::kInt8) << " threads "
                       << threads);
          ExpectBandsAsWhole({bytes}, {layer}, kind, dir + "/bands" + ext,
                             expected_path, threads);
        }
      }
    }
  }
}

// A layer with column scales (and outliers) band by band: its float output
// divides each band's columns again, and its int8 output quantizes each row
// again, byte for byte as the whole layer's.
TEST(LayerOutput, ALayerWithColumnScalesBandByBandIsTheWholeLayer) {
  const std::string dir = FreshDir("layer_output_column_scales");
  const PackedLayer layer = TiledLayer(QuantScheme::kPerTensorSymmetric,
                                       "embed.weight", 7, /*columns=*/true);
  ASSERT_EQ(layer.column_scales.size(), 100u);
  ASSERT_EQ(BandCount(layer), 3);
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  for (const OutputKind kind : {OutputKind::kFloat, OutputKind::kInt8}) {
    SCOPED_TRACE(::testing::Message()
                 << "int8 " << (kind == OutputKind::kInt8));
    WriteWhole({layer}, kind, dir + "/whole.safetensors");
    ExpectBandsAsWhole({bytes}, {layer}, kind, dir + "/bands.safetensors",
                       dir + "/whole.safetensors", 3);
  }
  // The float output is the int8 values dequantized, the outliers put back
  // and each column divided by its scale (computed here on its own).
  const RebuiltTensor decoded = DecodeLayer(layer).value();
  std::vector<float> expected = Dequantize(*decoded.int8);
  for (size_t k = 0; k < decoded.outlier_indices.size(); ++k)
    expected[decoded.outlier_indices[k]] = decoded.outlier_values[k];
  for (size_t i = 0; i < expected.size(); ++i)
    expected[i] /= layer.column_scales[(i % 200) / 2];
  WriteWhole({layer}, OutputKind::kFloat, dir + "/float.safetensors");
  const std::vector<uint8_t> float_file =
      ReadFileBytes(dir + "/float.safetensors").value();
  ASSERT_GE(float_file.size(), expected.size() * 4);
  EXPECT_EQ(
      std::memcmp(float_file.data() + float_file.size() - expected.size() * 4,
                  expected.data(), expected.size() * 4),
      0);

  // Taken whole from the pool's tiles (no rows writer: an in-memory pull),
  // the tensor keeps its column scales.
  const std::vector<uint8_t> bytes_again = SerializePackedLayer(layer);
  BaseStore bases("");
  std::vector<float> taken;
  {
    DecodePool pool(
        2, 1, /*hold=*/false, &bases,
        [&](size_t, RebuiltTensor tensor) -> absl::Status {
          ASSIGN_OR_RETURN(const Tensor t, tensor.ToFloatTensor());
          ASSIGN_OR_RETURN(taken, ToFloat32(t));
          return absl::OkStatus();
        },
        /*tile_jobs=*/true, nullptr);
    Deliver(pool, 0, bytes_again, EntryOf(layer.name, bytes_again), 0);
    pool.Wait();
    ASSERT_TRUE(pool.Take(0).ok());
  }
  EXPECT_EQ(taken, expected);
}

// Several tiled layers in one pool: a worker whose front layer's window of
// bands is full takes tiles of the next started layer; every layer is still
// written in row order, byte for byte as whole.
TEST(LayerOutput, SeveralTiledLayersInOnePoolEachWrittenInRowOrder) {
  const std::string dir = FreshDir("layer_output_several");
  std::vector<PackedLayer> layers;
  std::vector<std::vector<uint8_t>> bytes;
  for (int i = 0; i < 3; ++i) {
    layers.push_back(TiledLayer(QuantScheme::kPerChannelSymmetric,
                                "block" + std::to_string(i) + ".weight",
                                11 + i));
    bytes.push_back(SerializePackedLayer(layers.back()));
  }
  for (const OutputKind kind : {OutputKind::kFloat, OutputKind::kInt8}) {
    const std::string expected_path = dir + "/whole.safetensors";
    WriteWhole(layers, kind, expected_path);
    for (const int threads : {1, 2, 5}) {
      SCOPED_TRACE(::testing::Message()
                   << "int8 " << (kind == OutputKind::kInt8) << " threads "
                   << threads);
      ExpectBandsAsWhole(bytes, layers, kind, dir + "/bands.safetensors",
                         expected_path, threads);
    }
  }
}

// A rows sink may decline a layer (null): its tiles are then decoded into the
// whole layer, which goes to the sink as before (submitted whole, or decoded
// as it arrives).
TEST(LayerOutput, ALayerTheRowsSinkDeclinesIsTakenWhole) {
  const PackedLayer layer = TiledLayer(QuantScheme::kPerTensorSymmetric);
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  BaseStore bases("");
  for (const size_t chunk : {size_t{0}, size_t{700}}) {
    std::vector<int8_t> taken;
    absl::Status result;
    {
      DecodePool pool(
          2, 1, /*hold=*/false, &bases,
          [&](size_t, RebuiltTensor tensor) {
            taken = tensor.int8->values;  // one layer: no other thread writes
            return absl::OkStatus();
          },
          /*tile_jobs=*/true,
          [](size_t, const PackedLayer&)
              -> absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> {
            return nullptr;
          });
      Deliver(pool, 0, bytes, EntryOf(layer.name, bytes), chunk);
      pool.Wait();
      result = pool.Take(0).status();
    }
    ASSERT_TRUE(result.ok()) << result;
    EXPECT_EQ(taken, DecodeLayer(layer, 1).value().int8->values);
  }
}

// A tile that decodes to other values fails the layer's SHA-256 after its
// last band: DATA_LOSS naming the layer, and the tensor is not finished (the
// output cannot be committed with it).
TEST(LayerOutput, ALayerFailingItsHashIsNotFinished) {
  const std::string dir = FreshDir("layer_output_damaged");
  PackedLayer layer = TiledLayer(QuantScheme::kPerTensorSymmetric);
  layer.decoded_sha256[0] ^= 1;
  const absl::Status pulled =
      PullBandByBand(SerializePackedLayer(layer), layer, OutputKind::kFloat,
                     dir + "/out.safetensors", 2);
  EXPECT_EQ(pulled.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(pulled.message(), HasSubstr("embed.weight"));
  EXPECT_THAT(pulled.message(), HasSubstr("SHA-256"));
  // A bitstream cut short: the tile's error, the same way.
  layer = TiledLayer(QuantScheme::kPerTensorSymmetric);
  layer.tiles[5].resize(layer.tiles[5].size() / 2);
  const absl::Status cut =
      PullBandByBand(SerializePackedLayer(layer), layer, OutputKind::kInt8,
                     dir + "/out.pt", 2);
  EXPECT_EQ(cut.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(cut.message(), HasSubstr("embed.weight"));
}

// A rows writer that counts what it is given, passing it on.
class CountingWriter : public DecodePool::RowsWriter {
 public:
  CountingWriter(std::unique_ptr<DecodePool::RowsWriter> writer,
                 std::atomic<int>* rows, std::atomic<int>* finished)
      : writer_(std::move(writer)), rows_(rows), finished_(finished) {}
  absl::Status Rows(int64_t row0, absl::Span<int8_t> values) override {
    ++*rows_;
    return writer_->Rows(row0, values);
  }
  absl::Status Finish() override {
    ++*finished_;
    return writer_->Finish();
  }

 private:
  std::unique_ptr<DecodePool::RowsWriter> writer_;
  std::atomic<int>* rows_;
  std::atomic<int>* finished_;
};

// A pool writing one tiled layer band by band into `path`, counting the bands
// written and the layers finished.
struct CountingPull {
  CountingPull(const PackedLayer& layer, const std::string& path)
      : writer(CheckpointStreamWriter::Create(
                   path, Layout({layer}, OutputKind::kFloat))
                   .value()),
        output(writer.get(), OutputKind::kFloat),
        pool(
            2, 1, /*hold=*/false, &bases,
            [](size_t, RebuiltTensor) {
              return absl::InternalError("taken whole, not band by band");
            },
            /*tile_jobs=*/true,
            [this](size_t, const PackedLayer& parsed)
                -> absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> {
              ASSIGN_OR_RETURN(auto rows_writer, output.BeginRows(parsed));
              return std::make_unique<CountingWriter>(std::move(rows_writer),
                                                      &rows, &finished);
            }) {}

  BaseStore bases{""};
  std::atomic<int> rows = 0;
  std::atomic<int> finished = 0;
  std::unique_ptr<CheckpointStreamWriter> writer;
  LayerOutput output;
  DecodePool pool;
};

// Every byte but the last: the first two of the layer's three bands are
// decoded and written before it is submitted (the last tile is not whole),
// and it is not finished until then; then it is, byte for byte as whole.
TEST(LayerOutput, TilesDecodeAsTheLayerArrives) {
  const std::string dir = FreshDir("layer_output_arriving");
  const PackedLayer layer = TiledLayer(QuantScheme::kPerChannelSymmetric);
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  const v1::ManifestLayer expected = EntryOf(layer.name, bytes);
  WriteWhole({layer}, OutputKind::kFloat, dir + "/whole.safetensors");
  CountingPull pull(layer, dir + "/out.safetensors");
  const std::string all(bytes.begin(), bytes.end());
  for (size_t end = 500; end < all.size(); end += 500)
    pull.pool.Arriving(0, absl::string_view(all).substr(0, end), expected);
  pull.pool.Arriving(0, absl::string_view(all).substr(0, all.size() - 1),
                     expected);
  // Bounded: 10 s in 10 ms steps.
  for (int i = 0; i < 1000 && pull.rows < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(pull.rows, 2);
  EXPECT_EQ(pull.finished, 0);
  pull.pool.Submit(0, all, expected);
  pull.pool.Wait();
  ASSERT_TRUE(pull.pool.Take(0).ok());
  EXPECT_EQ(pull.rows, 3);
  EXPECT_EQ(pull.finished, 1);
  ASSERT_TRUE(pull.writer->Commit().ok());
  EXPECT_EQ(ReadFileBytes(dir + "/out.safetensors").value(),
            ReadFileBytes(dir + "/whole.safetensors").value());
}

// A rows writer whose first band waits for the test to let it through, so
// that the decoder is held behind with tiles of its layer left to hand out.
class GateWriter : public DecodePool::RowsWriter {
 public:
  GateWriter(std::unique_ptr<DecodePool::RowsWriter> writer,
             absl::Notification* entered, absl::Notification* open)
      : writer_(std::move(writer)), entered_(entered), open_(open) {}
  absl::Status Rows(int64_t row0, absl::Span<int8_t> values) override {
    if (!entered_->HasBeenNotified()) entered_->Notify();
    open_->WaitForNotification();
    return writer_->Rows(row0, values);
  }
  absl::Status Finish() override { return writer_->Finish(); }

 private:
  std::unique_ptr<DecodePool::RowsWriter> writer_;
  absl::Notification* entered_;
  absl::Notification* open_;
};

// A layer arriving while the decoder is behind (one worker held in the first
// layer, its other tiles waiting) is not started: no decode state is taken
// for it. Asked again once the decoder has caught up, it starts, and both
// layers come out byte for byte as whole.
TEST(LayerOutput, ALayerArrivingWhileTheDecoderIsBehindWaitsItsTurn) {
  const std::string dir = FreshDir("layer_output_arriving_behind");
  const std::vector<PackedLayer> layers = {
      TiledLayer(QuantScheme::kPerTensorSymmetric, "a.weight", 7),
      TiledLayer(QuantScheme::kPerChannelSymmetric, "b.weight", 8)};
  std::vector<std::vector<uint8_t>> bytes;
  for (const PackedLayer& layer : layers)
    bytes.push_back(SerializePackedLayer(layer));
  WriteWhole(layers, OutputKind::kFloat, dir + "/whole.safetensors");
  auto writer =
      CheckpointStreamWriter::Create(dir + "/out.safetensors",
                                     Layout(layers, OutputKind::kFloat))
          .value();
  const LayerOutput output(writer.get(), OutputKind::kFloat);
  absl::Notification entered;
  absl::Notification open;
  std::atomic<int> began[2] = {0, 0};
  std::atomic<int> finished = 0;
  std::atomic<int> rows = 0;
  BaseStore bases("");
  {
    DecodePool pool(
        1, layers.size(), /*hold=*/false, &bases,
        [](size_t, RebuiltTensor) {
          return absl::InternalError("taken whole, not band by band");
        },
        /*tile_jobs=*/true,
        [&](size_t index, const PackedLayer& parsed)
            -> absl::StatusOr<std::unique_ptr<DecodePool::RowsWriter>> {
          ++began[index];
          ASSIGN_OR_RETURN(auto rows_writer, output.BeginRows(parsed));
          if (index == 0) {
            return std::make_unique<GateWriter>(std::move(rows_writer),
                                                &entered, &open);
          }
          return std::make_unique<CountingWriter>(std::move(rows_writer), &rows,
                                                  &finished);
        });
    pool.Submit(0, std::string(bytes[0].begin(), bytes[0].end()),
                EntryOf(layers[0].name, bytes[0]));
    ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));
    const v1::ManifestLayer expected = EntryOf(layers[1].name, bytes[1]);
    const std::string all(bytes[1].begin(), bytes[1].end());
    const absl::string_view most =
        absl::string_view(all).substr(0, all.size() - 1);
    pool.Arriving(1, most, expected);
    EXPECT_EQ(began[1], 0);
    open.Notify();
    // Bounded: 10 s in 10 ms steps (layer 0 done: nothing left to hand out).
    for (int i = 0; i < 1000 && pool.decoded() < 1; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(pool.decoded(), 1);
    pool.Arriving(1, most, expected);
    EXPECT_EQ(began[1], 1);
    for (int i = 0; i < 1000 && rows < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(rows, 2);
    EXPECT_EQ(finished, 0);
    pool.Submit(1, all, expected);
    pool.Wait();
    ASSERT_TRUE(pool.Take(0).ok());
    ASSERT_TRUE(pool.Take(1).ok());
  }
  EXPECT_EQ(began[0], 1);
  EXPECT_EQ(began[1], 1);
  EXPECT_EQ(finished, 1);
  ASSERT_TRUE(writer->Commit().ok());
  EXPECT_EQ(ReadFileBytes(dir + "/out.safetensors").value(),
            ReadFileBytes(dir + "/whole.safetensors").value());
}

// Bytes that arrived other than the manifest's (a byte of the second tile
// changed): DATA_LOSS naming the layer at Submit, never finished; the output
// cannot be committed. Submitted bytes that are not those that arrived fail
// the same way.
TEST(LayerOutput, AnArrivedLayerNotMatchingItsManifestIsNotFinished) {
  const std::string dir = FreshDir("layer_output_arrived_damaged");
  const PackedLayer layer = TiledLayer(QuantScheme::kPerTensorSymmetric);
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  const v1::ManifestLayer expected = EntryOf(layer.name, bytes);
  std::vector<uint8_t> damaged = bytes;
  damaged[bytes.size() - layer.PayloadBytes() + layer.tiles[0].size() + 9] ^=
      0x40;
  for (const bool resubmitted : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "resubmitted " << resubmitted);
    CountingPull pull(layer, dir + "/out.safetensors");
    const std::string arrived(damaged.begin(), damaged.end());
    for (size_t end = 800; end < arrived.size(); end += 800)
      pull.pool.Arriving(0, absl::string_view(arrived).substr(0, end),
                         expected);
    pull.pool.Submit(
        0, resubmitted ? std::string(bytes.begin(), bytes.end()) : arrived,
        expected);
    pull.pool.Wait();
    const absl::Status result = pull.pool.Take(0).status();
    EXPECT_EQ(result.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(result.message(), HasSubstr("embed.weight"));
    EXPECT_EQ(pull.finished, 0);
    EXPECT_THAT(pull.writer->Commit().message(), HasSubstr("never written"));
  }
}

// A layer that stops arriving (a pull that failed or was cancelled) is never
// submitted: waiting for the pool, and destroying it, do not wait for it.
TEST(LayerOutput, ALayerThatStopsArrivingIsAbandoned) {
  const std::string dir = FreshDir("layer_output_abandoned");
  const PackedLayer layer = TiledLayer(QuantScheme::kPerTensorSymmetric);
  const std::vector<uint8_t> bytes = SerializePackedLayer(layer);
  const std::string half(bytes.begin(), bytes.begin() + bytes.size() / 2);
  for (const bool wait : {false, true}) {
    CountingPull pull(layer, dir + "/out.safetensors");
    pull.pool.Arriving(0, half, EntryOf(layer.name, bytes));
    if (wait) pull.pool.Wait();
    EXPECT_EQ(pull.finished, 0);
  }
}

}  // namespace
}  // namespace weightcast
