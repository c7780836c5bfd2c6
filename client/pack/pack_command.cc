#include "client/pack/pack_command.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/args.h"
#include "common/base/file.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/checkpoint.h"
#include "common/eval/evaluator.h"
#include "common/pack/front_end.h"

namespace weightcast {

const char kPackUsage[] = R"(usage:
  weightcast-pack MODEL -o DIR [options]       pack every tier into DIR/<tier>.wcm
  weightcast-pack --explain MODEL [options]     show the policy and each tensor's codec per tier
  weightcast-pack --unpack DIR/<tier>.wcm -o OUT.pt|OUT.safetensors [--int8]
                                               decode, verify SHA-256, write a checkpoint

MODEL is a torch.save checkpoint (a state_dict, or a dict holding one under "state_dict" or
"model"), a TorchScript archive (torch.jit.save), or safetensors; the format is read from the
content. --unpack writes float32 tensors that model.load_state_dict(torch.load(OUT)) accepts,
or with --int8 the int8 tensors plus "<name>.__scale__" (and "<name>.__zero_point__" for
asymmetric schemes): w = scale * (q - zero_point), scale per index of dimension 0 if per-channel.

options:
  --tiers LIST        comma-separated tiers (default q22,q27,q32,q37,lossless):
                      qNN = picture layers as HEVC at QP NN (0..51); lossless = int8 + zstd;
                      hevc-lossless = HEVC lossless; int8 = raw int8
  --preset NAME       x265 preset, ultrafast .. placebo (default veryfast)
  --scheme NAME       int8 scales: auto (default: per layer, per-channel symmetric where
                      per-tensor int8 leaves the output channels under 22.8 dB SQNR and
                      per-channel gains > 6 dB, else per-tensor symmetric; + the largest
                      weights as a float16 side list where that makes a layer transparent,
                      'scales' +out), per-tensor (-symmetric), per-channel (-symmetric),
                      per-tensor-asymmetric, per-channel-asymmetric
  --max-tile N        largest picture side; bigger matrices are tiled (default 4096)
  --max-tile-pixels N largest picture area; bigger tiles are cut further, their
                      longer side first (default 1048576: 1024 x 1024)
  --min-picture-elements N
                      2-D weights with at least N elements become pictures (default 4096)
  --convs-as-pictures code convolution weights as pictures [out, in*kh*kw] too
  --policy FILE       layer policy as JSON: {"min_picture_elements": N,
                      "convolutions": "int8"|"picture", "convolution_qp": QP,
                      "scheme": "auto"|"per-tensor"|"per-channel",
                      "overrides": {"name" or "prefix*": "picture"|"int8"|"float"|"passthrough"},
                      "mosaics": {"name" or "prefix*": [BH, BW] | "auto"}}: "mosaics" codes
                      those pictures as their rows' BHxBW blocks side by side (a first layer
                      on 28x28 images: [28, 28]; format version 4; codec 'hevc+mosaic');
                      "auto": the image blocks the weights show, if they show any
  --eval-bundle MODULE,DATA
                      activation-aware column weighting: each picture layer's columns
                      (but the model's last layer's) scaled by (RMS of its inputs / their
                      mean)^0.25 before coding and back after (format version 3; 'scales'
                      +cols), the RMS measured by running MODULE (the model's
                      architecture, torch.jit.save) on DATA's "inputs" (a tensor file)
                      with MODEL's tensors
  --int8              (--unpack) write int8 tensors with their scales instead of float32
  --threads N         tiles coded at once (default: one per core)
  -h, --help          this text

Every tier file holds all tensors: picture layers at the tier's codec, other weights as
int8 + zstd, 1-D tensors as float32, integer buffers untouched. SQNR is in dB against the
float weights; 'int8 SQNR' against the int8 values before coding (inf = exact).
)";

namespace {

absl::Status Usage(absl::string_view what) {
  return absl::InvalidArgumentError(what);
}

std::string Db(double db) {
  if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
  return absl::StrFormat("%.2f", db);
}

std::string Mb(uint64_t bytes) {
  return absl::StrFormat("%.3f MB", bytes / 1e6);
}

struct ModelSize {
  int64_t weights = 0;       // elements of floating-point tensors
  uint64_t float_bytes = 0;  // as float32
};

ModelSize SizeOf(const Model& model) {
  ModelSize size;
  for (const Tensor& t : model.tensors) {
    if (!IsFloatingPoint(t.dtype)) continue;
    size.weights += t.NumElements();
    size.float_bytes += static_cast<uint64_t>(t.NumElements()) * 4;
  }
  return size;
}

// "hevc@27", "zstd-int8", ...
std::string CodecAt(const Tensor& tensor, const LayerPolicy& policy,
                    const TierSpec& tier) {
  const LayerEncodeOptions options = OptionsFor(tensor, policy, tier, {});
  if (options.codec != LayerCodec::kHevc)
    return std::string(LayerCodecName(options.codec));
  return options.hevc.lossless ? "hevc-lossless"
                               : absl::StrCat("hevc@", options.hevc.qp);
}

absl::Status Explain(const PackCommand& command, const Model& model,
                     std::ostream& out) {
  ASSIGN_OR_RETURN(const std::vector<TierSpec> tiers,
                   ParseTierList(command.tiers));
  const LayerPolicy& policy = command.pack.policy;
  out << "policy: " << DescribeLayerPolicy(policy) << "\n\n";
  out << absl::StrFormat("%-36s %-20s %-9s %-12s", "tensor", "shape", "dtype",
                         "class");
  for (const TierSpec& tier : tiers)
    out << absl::StrFormat(" %-13s", tier.name);
  out << "\n";
  for (const Tensor& t : model.tensors) {
    out << absl::StrFormat("%-36s %-20s %-9s %-12s", t.name,
                           ShapeToString(t.shape), DTypeName(t.dtype),
                           LayerClassName(ClassifyTensor(t, policy)));
    for (const TierSpec& tier : tiers)
      out << absl::StrFormat(" %-13s", CodecAt(t, policy, tier));
    out << "\n";
  }
  return absl::OkStatus();
}

struct TierSummary {
  std::string name;
  uint64_t bytes = 0;
  double worst_sqnr = INFINITY;  // over every layer
  std::string worst_layer;
  int per_channel_layers = 0;
  double seconds = 0;
};

// "tensor" / "channel" (symmetric), "tensor-asym" / "channel-asym", or "-" for
// layers without int8 scales; "+out" when its outliers ride in a side list;
// "+cols" when its columns were weighted.
std::string ScalesOf(const PackedLayer& layer) {
  if (!IsInt8Codec(layer.codec)) return "-";
  if (!layer.column_scales.empty()) {
    PackedLayer plain;  // the rest of the name, without the tiles
    plain.codec = layer.codec;
    plain.scheme = layer.scheme;
    plain.outliers = layer.outliers;
    return ScalesOf(plain) + "+cols";
  }
  if (!layer.outliers.empty()) {
    PackedLayer plain;
    plain.codec = layer.codec;
    plain.scheme = layer.scheme;
    return ScalesOf(plain) + "+out";
  }
  switch (layer.scheme) {
    case QuantScheme::kPerTensorSymmetric:
      return "tensor";
    case QuantScheme::kPerChannelSymmetric:
      return "channel";
    case QuantScheme::kPerTensorAsymmetric:
      return "tensor-asym";
    case QuantScheme::kPerChannelAsymmetric:
      return "channel-asym";
  }
  return "?";
}

absl::Status Pack(const PackCommand& command, const Model& model,
                  std::ostream& out) {
  ASSIGN_OR_RETURN(const std::vector<TierSpec> tiers,
                   ParseTierList(command.tiers));
  std::error_code error;
  std::filesystem::create_directories(command.output, error);
  if (error)
    return absl::PermissionDeniedError(
        absl::StrCat(command.output, ": ", error.message()));
  const ModelSize size = SizeOf(model);
  out << absl::StrFormat("%s: %d tensors, %d weights; float32 %s, int8 %s\n",
                         command.input, model.tensors.size(), size.weights,
                         Mb(size.float_bytes), Mb(size.weights));
  std::vector<TierSummary> summaries;
  for (const TierSpec& tier : tiers) {
    const std::string path =
        absl::StrCat(command.output, "/", tier.name, ".wcm");
    out << absl::StrFormat("\ntier %s -> %s\n", tier.name, path);
    out << absl::StrFormat("  %-32s %-10s %-11s %-16s %12s %8s %9s %10s %9s\n",
                           "layer", "codec", "scales", "shape", "bytes",
                           "bits/w", "SQNR dB", "int8 SQNR", "encode s");
    TierSummary summary{tier.name};
    auto on_layer = [&](const PackedLayer& layer, double seconds) {
      out << absl::StrFormat(
          "  %-32s %-10s %-11s %-16s %12d %8.3f %9s %10s %9.3f\n", layer.name,
          absl::StrCat(LayerCodecName(layer.codec),
                       layer.mosaic.empty() ? "" : "+mosaic"),
          ScalesOf(layer), ShapeToString(layer.shape), layer.PayloadBytes(),
          layer.fidelity.bits_per_weight, Db(layer.fidelity.sqnr_db),
          Db(layer.fidelity.sqnr_int8_db), seconds);
      out.flush();
      if (layer.fidelity.sqnr_db < summary.worst_sqnr) {
        summary.worst_sqnr = layer.fidelity.sqnr_db;
        summary.worst_layer = layer.name;
      }
      if (IsInt8Codec(layer.codec) &&
          layer.scheme == QuantScheme::kPerChannelSymmetric)
        ++summary.per_channel_layers;
      summary.seconds += seconds;
    };
    ASSIGN_OR_RETURN(const std::vector<PackedLayer> layers,
                     PackModel(model, tier, command.pack, on_layer));
    const std::vector<uint8_t> bytes = SerializePackedModel(layers);
    RETURN_IF_ERROR(WriteFileAtomically(path, bytes));
    summary.bytes = bytes.size();
    out << absl::StrFormat(
        "  %-32s %-10s %-16s %12d %8.3f\n", "file total", "", "", summary.bytes,
        size.weights ? 8.0 * summary.bytes / size.weights : 0.0);
    summaries.push_back(summary);
  }
  out << absl::StrFormat(
      "\nsummary (file bytes, all tensors; SQNR of the worst layer, picture or "
      "not; layers with "
      "per-channel scales)\n");
  out << absl::StrFormat("  %-14s %14s %8s %9s %8s %15s %-24s %11s %9s\n",
                         "tier", "bytes", "bits/w", "x float", "x int8",
                         "worst SQNR dB", "worst layer", "per-channel",
                         "encode s");
  for (const TierSummary& s : summaries) {
    out << absl::StrFormat(
        "  %-14s %14d %8.3f %9.2f %8.2f %15s %-24s %11d %9.2f\n", s.name,
        s.bytes, size.weights ? 8.0 * s.bytes / size.weights : 0.0,
        s.bytes ? double(size.float_bytes) / s.bytes : 0.0,
        s.bytes ? double(size.weights) / s.bytes : 0.0, Db(s.worst_sqnr),
        s.worst_layer.empty() ? "-" : s.worst_layer, s.per_channel_layers,
        s.seconds);
  }
  return absl::OkStatus();
}

absl::Status Unpack(const PackCommand& command, std::ostream& out) {
  ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes,
                   ReadFileBytes(command.input));
  auto layers = ParsePackedModel(bytes);
  if (!layers.ok()) {
    return absl::Status(
        layers.status().code(),
        absl::StrCat(command.input, ": ", layers.status().message()));
  }
  const auto start = std::chrono::steady_clock::now();
  auto tensors = DecodeModel(*layers, command.pack.base.threads);
  if (!tensors.ok()) {
    return absl::Status(
        tensors.status().code(),
        absl::StrCat(command.input, ": ", tensors.status().message()));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  RETURN_IF_ERROR(WriteCheckpoint(
      *tensors, command.int8_output ? OutputKind::kInt8 : OutputKind::kFloat,
      command.output));
  out << absl::StrFormat(
      "%s: %d layers decoded and verified (SHA-256) in %.3f s -> %s (%s)\n",
      command.input, layers->size(), seconds, command.output,
      command.int8_output ? "int8" : "float32");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PackCommand> ParsePackCommand(
    const std::vector<std::string>& words) {
  const ArgSpec spec{
      {"-o", "--output", "--tiers", "--preset", "--scheme", "--max-tile",
       "--max-tile-pixels", "--min-picture-elements", "--policy", "--threads",
       "--eval-bundle"},
      {"-h", "--help", "--unpack", "--explain", "--convs-as-pictures",
       "--int8"}};
  ASSIGN_OR_RETURN(const Args args, Args::Parse(words, spec));
  PackCommand command;
  if (args.Has("-h") || args.Has("--help")) {
    command.mode = PackCommand::Mode::kHelp;
    return command;
  }
  if (args.Has("--unpack")) command.mode = PackCommand::Mode::kUnpack;
  if (args.Has("--explain")) command.mode = PackCommand::Mode::kExplain;
  command.output = args.Get("--output", args.Get("-o"));
  command.tiers = args.Get("--tiers", command.tiers);
  command.pack.base.hevc.preset =
      args.Get("--preset", command.pack.base.hevc.preset);
  if (args.Has("--policy")) {
    const std::string path = args.Get("--policy");
    ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, ReadFileBytes(path));
    auto policy = ParseLayerPolicy(absl::string_view(
        reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    if (!policy.ok())
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", policy.status().message()));
    command.pack.policy = *std::move(policy);
  }
  if (args.Has("--convs-as-pictures"))
    command.pack.policy.convolutions_as_pictures = true;
  if (args.Has("--scheme")) {  // over the policy file's
    ASSIGN_OR_RETURN(command.pack.policy.scheme,
                     FrontEndFromName(args.Get("--scheme")));
  }
  RETURN_IF_ERROR(args.Int("--max-tile", kCtuSize, 4 * kDefaultMaxTileSize,
                           &command.pack.base.max_tile_size));
  RETURN_IF_ERROR(
      args.Int("--max-tile-pixels", int64_t{kCtuSize} * kCtuSize,
               int64_t{4 * kDefaultMaxTileSize} * (4 * kDefaultMaxTileSize),
               &command.pack.base.max_tile_pixels));
  RETURN_IF_ERROR(args.Int("--min-picture-elements", int64_t{1},
                           int64_t{1} << 30,
                           &command.pack.policy.min_picture_elements));
  RETURN_IF_ERROR(args.Int("--threads", 1, 256, &command.pack.base.threads));
  command.int8_output = args.Has("--int8");
  if (args.Has("--eval-bundle")) {
    const std::string bundle = args.Get("--eval-bundle");
    const size_t comma = bundle.find(',');
    if (comma == std::string::npos || comma == 0 || comma + 1 == bundle.size())
      return Usage("--eval-bundle takes MODULE,DATA");
    command.eval_module = bundle.substr(0, comma);
    command.eval_data = bundle.substr(comma + 1);
  }
  if (args.positional().size() > 1)
    return Usage(
        absl::StrCat("unexpected argument ", Echo(args.positional()[1])));
  if (args.positional().empty()) return Usage("no input file given");
  command.input = args.positional()[0];
  if (command.mode != PackCommand::Mode::kExplain && command.output.empty())
    return Usage("-o is required");
  ASSIGN_OR_RETURN(const std::vector<TierSpec> tiers,
                   ParseTierList(command.tiers));
  for (const TierSpec& tier : tiers) {
    if (IsAccuracyTier(tier)) {
      return Usage(absl::StrCat(
          "tier ", tier.name,
          " is found by the server on a version's evaluation bundle; "
          "weightcast-pack has no bundle to search with"));
    }
  }
  return command;
}

absl::Status RunPackCommand(const PackCommand& command, std::ostream& out) {
  switch (command.mode) {
    case PackCommand::Mode::kHelp:
      out << kPackUsage;
      return absl::OkStatus();
    case PackCommand::Mode::kUnpack:
      return Unpack(command, out);
    case PackCommand::Mode::kExplain:
    case PackCommand::Mode::kPack:
      break;
  }
  ASSIGN_OR_RETURN(const Model model, ReadCheckpoint(command.input));
  if (command.mode == PackCommand::Mode::kExplain)
    return Explain(command, model, out);
  if (command.eval_module.empty()) return Pack(command, model, out);
  PackCommand weighted = command;
  ASSIGN_OR_RETURN(const std::unique_ptr<Evaluator> evaluator,
                   Evaluator::Load(command.eval_module, command.eval_data));
  auto rms = evaluator->InputRmsToWeigh(model);
  if (!rms.ok()) {
    return absl::Status(
        rms.status().code(),
        absl::StrCat(command.eval_module, ": ", rms.status().message()));
  }
  weighted.pack.input_rms = *std::move(rms);
  return Pack(weighted, model, out);
}

}  // namespace weightcast
