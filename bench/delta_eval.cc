// Measures version deltas on real checkpoints (bench/eval/delta.py drives it):
// for each tier QP, codes every picture layer of version A at that tier,
// version B on its own (intra), and B as a delta on A
// (common/pack/delta_codec); writes B's two reconstructions as float .pt files
// for accuracy, and prints one JSON object with the byte counts.
//
// usage: delta_eval A.pt B.pt OUT_DIR QP[,QP...] OFFSET[,OFFSET...]
// [POLICY.json]
//   OFFSET: B's P pictures at the tier's QP + OFFSET (0: the tier's QP); "m":
//   the delta the
//           server stores (EncodeMatchedLayerDelta: B's fidelity on its own,
//           fewer bytes)
//   OUT_DIR/b_intra_qNN.pt, OUT_DIR/b_delta_qNN_oOFFSET.pt   B as a device gets
//   it each way
// JSON per QP: bytes of A's tier, B's tier, and per offset B's delta (picture
// layers as deltas, the rest whole), the baseline delta (zstd of the int8
// difference B - A of the same reconstructions, picture layers; the rest whole)
// and how many picture layers had a delta. Every delta is decoded against A's
// serialized layer and must give its recorded SHA-256, or the run fails.
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/pack/delta_codec.h"
#include "common/pack/layer_policy.h"
#include "common/pack/tier.h"
#include "common/pack/zstd_codec.h"
#include "nlohmann/json.hpp"

namespace weightcast {
namespace {

constexpr int kMatched = 1000;  // the "m" offset

absl::Status Run(const std::string& a_path, const std::string& b_path,
                 const std::string& out_dir, const std::vector<int>& qps,
                 const std::vector<int>& offsets, const LayerPolicy& policy) {
  ASSIGN_OR_RETURN(const Model a, ReadCheckpoint(a_path));
  ASSIGN_OR_RETURN(const Model b, ReadCheckpoint(b_path));
  if (a.tensors.size() != b.tensors.size())
    return absl::InvalidArgumentError("A and B hold different tensors");
  nlohmann::json out = nlohmann::json::array();
  for (int qp : qps) {
    ASSIGN_OR_RETURN(const TierSpec tier, ParseTier("q" + std::to_string(qp)));
    uint64_t a_bytes = 0, b_bytes = 0;
    int picture_layers = 0;
    std::vector<uint64_t> delta_bytes(offsets.size()),
        zstd_bytes(offsets.size());
    std::vector<int> deltas(offsets.size());
    std::vector<RebuiltTensor> intra;
    std::vector<std::vector<RebuiltTensor>> delta(offsets.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      const Tensor& ta = a.tensors[i];
      const Tensor& tb = b.tensors[i];
      if (ta.name != tb.name)
        return absl::InvalidArgumentError("A and B hold different tensors: " +
                                          ta.name);
      const LayerEncodeOptions options = OptionsFor(tb, policy, tier, {});
      ASSIGN_OR_RETURN(const PackedLayer coded_a,
                       EncodeLayer(ta, OptionsFor(ta, policy, tier, {})));
      ASSIGN_OR_RETURN(const PackedLayer coded_b, EncodeLayer(tb, options));
      ASSIGN_OR_RETURN(const RebuiltTensor rebuilt_b, DecodeLayer(coded_b));
      a_bytes += coded_a.PayloadBytes();
      b_bytes += coded_b.PayloadBytes();
      intra.push_back(rebuilt_b);
      const bool picture = ClassifyTensor(tb, policy) == LayerClass::kPicture &&
                           options.codec == LayerCodec::kHevc;
      picture_layers += picture;
      ASSIGN_OR_RETURN(const RebuiltTensor rebuilt_a, DecodeLayer(coded_a));
      for (size_t o = 0; o < offsets.size(); ++o) {
        std::optional<PackedLayer> layer_delta;
        if (picture && offsets[o] == kMatched) {
          ASSIGN_OR_RETURN(
              layer_delta,
              EncodeMatchedLayerDelta(coded_a, ta, tb, coded_b.fidelity.sqnr_db,
                                      SerializePackedLayer(coded_b).size()));
        } else if (picture) {
          ASSIGN_OR_RETURN(layer_delta,
                           EncodeLayerDelta(coded_a, ta, tb, offsets[o]));
        }
        if (!layer_delta) {  // sent whole
          delta_bytes[o] += coded_b.PayloadBytes();
          zstd_bytes[o] += coded_b.PayloadBytes();
          delta[o].push_back(rebuilt_b);
          continue;
        }
        ++deltas[o];
        delta_bytes[o] += layer_delta->PayloadBytes();
        // Fails the run unless the delta decodes against A's layer to its
        // recorded SHA-256.
        ASSIGN_OR_RETURN(
            RebuiltTensor rebuilt,
            DecodeLayerDelta(SerializePackedLayer(coded_a), *layer_delta));
        // The baseline sends the same update losslessly: B's reconstruction
        // minus A's, modulo 256.
        std::vector<uint8_t> difference(rebuilt.int8->values.size());
        for (size_t k = 0; k < difference.size(); ++k) {
          difference[k] = static_cast<uint8_t>(rebuilt.int8->values[k] -
                                               rebuilt_a.int8->values[k]);
        }
        zstd_bytes[o] += ZstdCompress(difference).size();
        delta[o].push_back(std::move(rebuilt));
      }
    }
    const std::string tag = "_q" + std::to_string(qp);
    RETURN_IF_ERROR(WriteCheckpoint(intra, OutputKind::kFloat,
                                    out_dir + "/b_intra" + tag + ".pt"));
    nlohmann::json variants = nlohmann::json::array();
    for (size_t o = 0; o < offsets.size(); ++o) {
      const std::string name =
          offsets[o] == kMatched ? "m" : std::to_string(offsets[o]);
      RETURN_IF_ERROR(
          WriteCheckpoint(delta[o], OutputKind::kFloat,
                          out_dir + "/b_delta" + tag + "_o" + name + ".pt"));
      variants.push_back({{"qp_offset", name},
                          {"bytes", delta_bytes[o]},
                          {"zstd_diff_bytes", zstd_bytes[o]},
                          {"layers", deltas[o]}});
    }
    out.push_back({{"qp", qp},
                   {"a_bytes", a_bytes},
                   {"b_bytes", b_bytes},
                   {"picture_layers", picture_layers},
                   {"deltas", variants}});
  }
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace weightcast

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    std::cerr << "usage: delta_eval A.pt B.pt OUT_DIR QP[,QP...] "
                 "OFFSET[,OFFSET...] [POLICY.json]\n";
    return 2;
  }
  std::vector<int> lists[2];
  for (int k = 0; k < 2; ++k) {
    for (absl::string_view part : absl::StrSplit(argv[4 + k], ',')) {
      int value = weightcast::kMatched;
      if (!(k == 1 && part == "m") && !absl::SimpleAtoi(part, &value)) {
        std::cerr << "delta_eval: bad list " << argv[4 + k] << "\n";
        return 2;
      }
      lists[k].push_back(value);
    }
  }
  std::string policy_json;
  if (argc == 7) {
    auto bytes = weightcast::ReadFileBytes(argv[6]);
    if (!bytes.ok()) {
      std::cerr << "delta_eval: " << bytes.status().message() << "\n";
      return 2;
    }
    policy_json.assign(bytes->begin(), bytes->end());
  }
  auto policy = weightcast::ParseLayerPolicy(policy_json);
  if (!policy.ok()) {
    std::cerr << "delta_eval: " << policy.status().message() << "\n";
    return 2;
  }
  const absl::Status status =
      weightcast::Run(argv[1], argv[2], argv[3], lists[0], lists[1], *policy);
  if (!status.ok()) {
    std::cerr << "delta_eval: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
