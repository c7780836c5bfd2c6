// Writes the committed seed corpus of the fuzz targets
// (tests/fuzz/corpus/TARGET/) from real encodings: small safetensors files,
// packed layers at several codecs, HEVC bitstreams. The torch.save seeds
// (data.pkl records) and the TorchScript archives come from PyTorch:
// tests/fuzz/make_torch_seeds.py, tests/fuzz/make_torchscript_seeds.py.
// usage: make_fuzz_seeds CORPUS_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/safetensors.h"
#include "common/hevc/picture.h"
#include "common/hevc/x265_encoder.h"
#include "common/pack/layer_codec.h"
#include "common/pack/packed_layer.h"

namespace {

void Write(const std::filesystem::path& path,
           const std::vector<uint8_t>& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

weightcast::Tensor Weights(const std::string& name, int64_t rows,
                           int64_t cols) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(static_cast<size_t>(rows * cols));
  for (float& v : values) v = normal(rng);
  return weightcast::MakeFloat32Tensor(name, {rows, cols}, values);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds CORPUS_DIR\n");
    return 2;
  }
  const std::filesystem::path corpus = argv[1];
  weightcast::Model model;
  model.tensors.push_back(Weights("fc.weight", 16, 24));
  model.tensors.push_back(weightcast::MakeFloat32Tensor(
      "fc.bias", {4}, std::vector<float>{1, 2, 3, 4}));
  Write(corpus / "fuzz_safetensors" / "two_tensors",
        weightcast::SerializeSafetensors(model));

  const weightcast::Tensor weights = Weights("w", 40, 72);
  int n = 0;
  for (auto codec :
       {weightcast::LayerCodec::kHevc, weightcast::LayerCodec::kZstdInt8,
        weightcast::LayerCodec::kRawInt8, weightcast::LayerCodec::kFloat32}) {
    weightcast::LayerEncodeOptions options;
    options.codec = codec;
    options.hevc.qp = 30;
    options.threads = 1;
    auto layer = weightcast::EncodeLayer(weights, options);
    if (!layer.ok()) return 1;
    Write(corpus / "fuzz_packed_layer" / absl::StrCat("codec", n++),
          weightcast::SerializePackedLayer(*layer));
  }
  // The outlier front end (format version 2): a few x20 weights in a float16
  // side list.
  {
    std::vector<float> values = weightcast::ToFloat32(weights).value();
    for (size_t i = 5; i < values.size(); i += 397) values[i] = 1.5f;
    const weightcast::Tensor spiky =
        weightcast::MakeFloat32Tensor("w", weights.shape, values);
    int k = 0;
    for (auto codec :
         {weightcast::LayerCodec::kHevc, weightcast::LayerCodec::kZstdInt8}) {
      weightcast::LayerEncodeOptions options;
      options.codec = codec;
      options.hevc.qp = 30;
      options.threads = 1;
      options.outliers = true;
      auto layer = weightcast::EncodeLayer(spiky, options);
      if (!layer.ok() || layer->outliers.empty()) return 1;
      Write(corpus / "fuzz_packed_layer" / absl::StrCat("outliers", k++),
            weightcast::SerializePackedLayer(*layer));
    }
  }
  // The mosaic layout (format version 4): the rows' 3x4 blocks as a picture.
  {
    weightcast::LayerEncodeOptions options;
    options.codec = weightcast::LayerCodec::kHevc;
    options.hevc.qp = 30;
    options.threads = 1;
    options.mosaic = {3, 4};
    auto layer = weightcast::EncodeLayer(weights, options);
    if (!layer.ok() || layer->mosaic.empty()) return 1;
    Write(corpus / "fuzz_packed_layer" / "mosaic",
          weightcast::SerializePackedLayer(*layer));
  }
  for (int side : {32, 64}) {
    weightcast::Plane plane{
        side, side, std::vector<uint8_t>(static_cast<size_t>(side * side))};
    for (int y = 0; y < side; ++y) {
      for (int x = 0; x < side; ++x)
        plane.pixels[y * side + x] =
            static_cast<uint8_t>((x * 7 + y * 3) % 256);
    }
    weightcast::HevcEncodeOptions options;
    options.qp = 27;
    auto bitstream = weightcast::EncodeIntraPicture(plane, options);
    if (!bitstream.ok()) return 1;
    std::vector<uint8_t> seed = {static_cast<uint8_t>(side / 32 - 1)};
    seed.insert(seed.end(), bitstream->begin(), bitstream->end());
    Write(corpus / "fuzz_hevc_decode" / absl::StrCat("square", side), seed);
  }
  return 0;
}
