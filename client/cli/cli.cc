#include "client/cli/cli.h"

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <streambuf>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/fleet_commands.h"
#include "client/sdk/client.h"
#include "common/base/args.h"
#include "common/base/file.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"
#include "common/checkpoint/safetensors_shards.h"
#include "nlohmann/json.hpp"

namespace weightcast {
namespace {

// A file under $TMPDIR (or /tmp) removed when this goes out of scope.
class TemporaryFile {
 public:
  static TemporaryFile Create(const std::string& prefix) {
    std::error_code error;
    std::string pattern =
        (std::filesystem::temp_directory_path(error) / (prefix + "-XXXXXX"))
            .string();
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) return TemporaryFile("");
    ::close(fd);
    return TemporaryFile(pattern);
  }
  TemporaryFile(TemporaryFile&& other) : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  TemporaryFile& operator=(TemporaryFile&&) = delete;
  ~TemporaryFile() {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  explicit TemporaryFile(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// A folder, an index file, or more than one file: a sharded checkpoint.
bool IsShardedCheckpoint(const std::vector<std::string>& paths) {
  std::error_code error;
  return paths.size() > 1 || std::filesystem::is_directory(paths[0], error) ||
         absl::EndsWith(paths[0], ".json");
}

const std::string kUsage =
    R"(usage: weightcast [--server ADDR] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]
                  [--token TOKEN] COMMAND ...
  register MODEL VERSION CHECKPOINT... [--ladder LIST] [--description TEXT] [--policy FILE.json]
       CHECKPOINT: a .pt or .safetensors file; a Hugging Face folder holding
       model.safetensors.index.json and its shards (or that index file, or several .safetensors
       files): checked (shards confined to the folder, complete, no tensor twice), merged into
       one temporary safetensors file under $TMPDIR and registered as one version
       [--eval-module MODULE.pt --eval-data DATA.pt]   with an evaluation bundle (a TorchScript
       module and a file of "inputs" and, for a classifier, "labels") the server measures every
       tier's top-1 and the cosine of its outputs with the float model's (inputs only: cosine)
       [--base-version V]   code the qNN tiers' picture layers as deltas on version V (same
       tensors) where smaller: clients holding V's layers (pull --base-dir) get only the deltas
  ls
  describe MODEL [VERSION] [--json]            --json: everything, per layer, machine-readable
  tiers MODEL [VERSION] [--bandwidth MBIT/S]   bytes, bits/weight, ratios, SQNR, accuracy, time
  pull MODEL[@VERSION] -o OUT.pt|OUT.safetensors|DIR [--tier NAME | --max-bytes N |
       --min-sqnr DB | --max-accuracy-drop POINTS | --min-output-cosine C |
       --bandwidth MBIT/S --within SECONDS]   --min-output-cosine: the smallest tier whose
       outputs keep a mean cosine >= C (-1..1) with the float model's (a bundle with or
       without labels)
       (a bound given before the server has the tiers' sizes waits until it has: the ladder is
       encoded on registration, or warmed on such a pull)
       NAME: qNN, budget-N, lossless, ..., or acc-X (a version with an evaluation bundle: the
       smallest model the server finds whose top-1 is within X points of the float model's,
       e.g. acc-0.5; searched the first time it is asked for: at most 8 evaluations per
       bisection, a probe per picture layer and 8 more for a descent; all of it twice
       where the server also tries column-weighted layers), or
       cos-C (the same by output cosine: outputs keep a mean cosine >= C, 0..1, with the
       float model's; a bundle with or without labels, e.g. cos-0.99)
       [--int8] [--limit MBIT/S] [--base-dir DIR]   DIR keeps pulled layers for delta pulls
       [--shard-bytes N]   -o DIR gets safetensors shards of at most N bytes of tensor
       data (model-0000k-of-0000n.safetensors) and model.safetensors.index.json
       A .safetensors or .pt output (float or --int8) is written layer by layer as layers
       are verified.
       [--progressive COARSE [--coarse-out PATH]]   progressive: tier COARSE (qNN or budget-N)
       arrives first (written to PATH as soon as it is verified), then a refinement to the
       selected qNN tier as P pictures on it (tier COARSE+SELECTED); a plain pull when the
       selected tier is not finer
       [--grpc-only]   when the server's manifests name a blob URL (weightcastd
       --blob-base-url), layer bytes come over HTTP from there (falling back to gRPC);
       --grpc-only takes them from the gRPC stream
       [--decode-whole-layers]   decode a layer's tiles once the layer is whole, not as
       its bytes arrive (the baseline bench/run_large_model_benchmark compares with)
  warm MODEL [VERSION [TIER...]]                  encode tiers in the background
  rm MODEL VERSION
  health                                       exit 0 when the server is SERVING (for probes)
)" + std::string(kFleetUsage) +
    R"(--server defaults to 127.0.0.1:50051. VERSION defaults to latest.
Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 network failure, 5 verification failed.
)";

int ExitCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitNetwork;
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
      return kExitVerification;
    default:
      return kExitError;
  }
}

std::string Db(double db) {
  if (std::isinf(db)) return db > 0 ? "inf" : "-";
  return absl::StrFormat("%.2f", db);
}

// The options each command takes (the program's own come before the command).
const std::map<std::string, ArgSpec>& CommandSpecs() {
  static const auto* specs = new std::map<std::string, ArgSpec>{
      {"register",
       {{"--ladder", "--description", "--policy", "--eval-module",
         "--eval-data", "--base-version"},
        {}}},
      {"ls", {}},
      {"describe", {{"--bandwidth"}, {"--json"}}},
      {"tiers", {{"--bandwidth"}, {}}},
      {"pull",
       {{"-o", "--tier", "--max-bytes", "--min-sqnr", "--max-accuracy-drop",
         "--min-output-cosine", "--bandwidth", "--within", "--limit",
         "--base-dir", "--progressive", "--coarse-out", "--shard-bytes"},
        {"--int8", "--grpc-only", "--decode-whole-layers"}}},
      {"warm", {}},
      {"rm", {}},
      {"health", {}},
      {"rollout", {{"--percent", "--groups"}, {}}},
      {"agent",
       {{"--device-id", "--dir", "--models", "--groups", "--tier",
         "--max-bytes", "--progressive"},
        {"--int8"}}},
  };
  return *specs;
}

void PrintTiers(const ModelInfo& info, double mbit, std::ostream& out) {
  const double float_bytes = 4.0 * info.float_weights;
  out << absl::StrFormat(
      "%s/%s: %d tensors, %d float weights (float32 %.3f MB, int8 %.3f MB)\n",
      info.model, info.version, info.tensors, info.float_weights,
      float_bytes / 1e6, info.float_weights / 1e6);
  out << absl::StrFormat(
      "%-14s %-12s %12s %8s %8s %7s %11s %8s %8s %8s %10s  %s\n", "tier",
      "state", "bytes", "bits/w", "x float", "x int8", "worst SQNR", "top-1 %",
      "drop", "cosine", absl::StrFormat("s@%gMb/s", mbit), "worst layer");
  const bool labelled =
      !info.reference_accuracy || info.reference_accuracy->labelled;
  for (const TierSummary& t : info.tiers) {
    std::string top1 = info.has_eval_bundle ? "pending" : "-", drop = "-",
                cosine = "-";
    if (t.state == "READY" && !t.error.empty())
      top1 = "error";  // its accuracy could not be measured: below
    if (t.accuracy) {
      top1 = labelled ? absl::StrFormat("%.2f", t.accuracy->top1) : "-";
      if (info.reference_accuracy && labelled)
        drop = absl::StrFormat(
            "%.2f", info.reference_accuracy->top1 - t.accuracy->top1);
      if (t.accuracy->output_cosine)
        cosine = absl::StrFormat("%.4f", *t.accuracy->output_cosine);
    }
    if (t.state != "READY") {
      out << absl::StrFormat("%-14s %-12s %12s %8s %8s %7s %11s %8s %8s %8s\n",
                             t.name, t.state, "-", "-", "-", "-", "-",
                             t.accuracy ? top1 : "-", drop, cosine);
      continue;
    }
    out << absl::StrFormat(
        "%-14s %-12s %12d %8.3f %8.2f %7.2f %11s %8s %8s %8s %10.2f  %s\n",
        t.name, t.state, t.bytes, t.bits_per_weight,
        t.bytes ? float_bytes / t.bytes : 0,
        t.bytes ? info.float_weights / double(t.bytes) : 0,
        Db(t.worst_layer_sqnr_db), top1, drop, cosine,
        t.bytes * 8.0 / (mbit * 1e6),
        t.worst_layer.empty() ? "-" : t.worst_layer);
  }
  for (const TierSummary& t : info.tiers) {
    if (t.state == "READY" && !t.error.empty())
      out << t.name << ": " << t.error << "\n";
  }
  out << "worst SQNR: the lowest of every layer's, picture or not (dB against "
         "the float weights)\n";
  if (info.reference_accuracy && labelled) {
    out << absl::StrFormat(
        "accuracy: measured by the server on %d examples of the evaluation "
        "bundle; the checkpoint as "
        "registered: top-1 %.2f %%, top-2 %.2f %%; cosine: of each tier's "
        "outputs with the float model's\n",
        info.reference_accuracy->examples, info.reference_accuracy->top1,
        info.reference_accuracy->top2);
  } else if (info.reference_accuracy) {
    out << absl::StrFormat(
        "accuracy: the evaluation bundle has %d inputs and no labels; cosine: "
        "the mean cosine of each tier's outputs with the float model's\n",
        info.reference_accuracy->examples);
  } else {
    out << "accuracy: not measured (the version has no evaluation bundle); "
           "fidelity is SQNR only\n";
  }
}

// "tensor", "channel" (symmetric scales), "tensor-asym", "channel-asym", or "-"
// (no int8 scales); "+out" when the layer's outliers ride in a side list,
// "+cols" when it is coded with column scales, "+mosaic" as a mosaic.
std::string ScalesName(const std::string& quant_scheme) {
  if (quant_scheme.empty()) return "-";
  std::string name = quant_scheme.substr(0, quant_scheme.find('-'));
  if (absl::StrContains(quant_scheme, "-asymmetric")) name += "-asym";
  if (absl::StrContains(quant_scheme, "+outliers")) name += "+out";
  if (absl::StrContains(quant_scheme, "+cols")) name += "+cols";
  if (absl::EndsWith(quant_scheme, "+mosaic")) name += "+mosaic";
  return name;
}

// describe: each layer's scales and SQNR in every READY tier.
void PrintLayers(const ModelInfo& info, std::ostream& out) {
  std::vector<const TierSummary*> ready;
  for (const TierSummary& t : info.tiers) {
    if (t.state == "READY" && !t.layers.empty()) ready.push_back(&t);
  }
  if (ready.empty()) return;
  out << "\nlayers: int8 scales (tensor: one per tensor, channel: one per "
         "output channel; +out: outliers in a side list, +cols: column "
         "scales, +mosaic: a mosaic picture) / SQNR dB, per tier\n";
  out << absl::StrFormat("%-32s", "layer");
  for (const TierSummary* t : ready) out << absl::StrFormat(" %16s", t->name);
  out << "\n";
  for (size_t i = 0; i < ready[0]->layers.size(); ++i) {
    out << absl::StrFormat("%-32s", ready[0]->layers[i].name);
    for (const TierSummary* t : ready) {
      if (i >= t->layers.size()) continue;
      const LayerSummary& l = t->layers[i];
      out << absl::StrFormat(" %16s", absl::StrCat(ScalesName(l.quant_scheme),
                                                   " ", Db(l.sqnr_db)));
    }
    out << "\n";
  }
}

// JSON numbers cannot be infinite: an exact layer's SQNR is null.
nlohmann::json Number(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

nlohmann::json AccuracyJson(const std::optional<AccuracyFigures>& a) {
  if (!a) return nullptr;
  return {{"top1", a->top1},
          {"top2", a->top2},
          {"examples", a->examples},
          {"labelled", a->labelled},
          {"output_cosine", a->output_cosine ? nlohmann::json(*a->output_cosine)
                                             : nlohmann::json(nullptr)}};
}

nlohmann::json ToJson(const ModelInfo& info) {
  nlohmann::json tiers = nlohmann::json::array();
  for (const TierSummary& t : info.tiers) {
    nlohmann::json layers = nlohmann::json::array();
    for (const LayerSummary& l : t.layers) {
      layers.push_back({{"name", l.name},
                        {"codec", l.codec},
                        {"bytes", l.bytes},
                        {"bits_per_weight", l.bits_per_weight},
                        {"sqnr_db", Number(l.sqnr_db)},
                        {"qp", l.qp},
                        {"quant_scheme", l.quant_scheme}});
    }
    tiers.push_back({{"name", t.name},
                     {"state", t.state},
                     {"bytes", t.bytes},
                     {"bits_per_weight", t.bits_per_weight},
                     {"worst_sqnr_db", Number(t.worst_sqnr_db)},
                     {"worst_layer_sqnr_db", Number(t.worst_layer_sqnr_db)},
                     {"worst_layer", t.worst_layer},
                     {"accuracy", AccuracyJson(t.accuracy)},
                     {"error", t.error},
                     {"layers", layers}});
  }
  return {{"model", info.model},
          {"version", info.version},
          {"description", info.description},
          {"layer_policy", info.layer_policy},
          {"source_bytes", info.source_bytes},
          {"tensors", info.tensors},
          {"float_weights", info.float_weights},
          {"has_eval_bundle", info.has_eval_bundle},
          {"base_version", info.base_version},
          {"reference_accuracy", AccuracyJson(info.reference_accuracy)},
          {"tiers", tiers}};
}

std::string Bar(const PullProgress& p) {
  const double fraction =
      p.total_bytes ? double(p.bytes_received) / p.total_bytes : 0;
  const int width = 30;
  const int filled = static_cast<int>(fraction * width);
  const double rate = p.seconds > 0 ? p.bytes_received / p.seconds : 0;
  const double eta = rate > 0 ? (p.total_bytes - p.bytes_received) / rate : 0;
  return absl::StrFormat(
      "\r[%s%s] %5.1f%% %.2f/%.2f MB %.2f MB/s ETA %.0fs decoded %d/%d backlog "
      "%d",
      std::string(filled, '#'), std::string(width - filled, ' '),
      100 * fraction, p.bytes_received / 1e6, p.total_bytes / 1e6, rate / 1e6,
      eta, p.layers_decoded, p.layers_total, p.decode_backlog);
}

// What the CLI prints goes through this to `sink`, made TerminalSafe: model
// names, versions, descriptions and error messages from a server cannot move
// the cursor, clear the screen or retitle the terminal. Text is passed on a
// line at a time and on flush.
class TerminalSafeBuffer : public std::streambuf {
 public:
  explicit TerminalSafeBuffer(std::ostream& sink) : sink_(sink) {}
  ~TerminalSafeBuffer() override { sync(); }

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof()))
      return traits_type::not_eof(c);
    pending_ += traits_type::to_char_type(c);
    if (c == '\n') Emit();
    return c;
  }
  std::streamsize xsputn(const char* text, std::streamsize n) override {
    pending_.append(text, static_cast<size_t>(n));
    if (pending_.find('\n') != std::string::npos) Emit();
    return n;
  }
  int sync() override {
    Emit();
    sink_.flush();
    return 0;
  }

 private:
  void Emit() {
    sink_ << TerminalSafe(pending_);
    pending_.clear();
  }

  std::ostream& sink_;
  std::string pending_;
};

// `progress`: where the terminal progress bar goes (unfiltered: it rewrites its
// line with '\r').
absl::Status Run(const std::string& command, const Args& args, Client& client,
                 std::ostream& out, std::ostream& progress, bool terminal) {
  const auto& pos = args.positional();
  auto flag = [&](absl::string_view name) { return args.Get(name); };
  auto number = [&](absl::string_view name, double* value) {
    return args.Number(name, 0, value);
  };
  if (command == "register") {
    if (pos.size() < 3)
      return absl::InvalidArgumentError("register MODEL VERSION CHECKPOINT...");
    RegisterOptions options{pos[0], pos[1], pos[2], flag("--ladder"),
                            flag("--description")};
    // A sharded checkpoint travels as one safetensors file, merged here.
    std::optional<TemporaryFile> merged;
    if (IsShardedCheckpoint({pos.begin() + 2, pos.end()})) {
      auto shards = OpenSafetensorsShards({pos.begin() + 2, pos.end()});
      if (!shards.ok()) return shards.status();
      merged.emplace(TemporaryFile::Create("weightcast-register"));
      if (merged->path().empty())
        return absl::UnavailableError("cannot create a temporary file");
      if (absl::Status status = MergeSafetensorsShards(*shards, merged->path());
          !status.ok())
        return status;
      options.checkpoint_path = merged->path();
    }
    if (!flag("--policy").empty()) {
      auto policy = ReadFileBytes(flag("--policy"));
      if (!policy.ok()) return policy.status();
      options.layer_policy_json.assign(policy->begin(), policy->end());
    }
    options.eval_module_path = flag("--eval-module");
    options.eval_data_path = flag("--eval-data");
    options.base_version = flag("--base-version");
    auto info = client.Register(options);
    if (!info.ok()) return info.status();
    out << "registered " << info->model << "/" << info->version << ": "
        << info->tensors << " tensors, tiers";
    for (const auto& t : info->tiers) out << " " << t.name;
    out << "\n";
    if (info->reference_accuracy && info->reference_accuracy->labelled) {
      out << absl::StrFormat(
          "accuracy as registered: top-1 %.2f %%, top-2 %.2f %% on %d "
          "examples\n",
          info->reference_accuracy->top1, info->reference_accuracy->top2,
          info->reference_accuracy->examples);
    } else if (info->reference_accuracy) {
      out << absl::StrFormat(
          "evaluation bundle without labels: %d inputs; each tier gets the "
          "output cosine against the float model\n",
          info->reference_accuracy->examples);
    }
    return absl::OkStatus();
  }
  if (command == "ls") {
    auto models = client.List();
    if (!models.ok()) return models.status();
    for (const auto& [name, versions] : *models)
      out << name << "\t" << absl::StrJoin(versions, " ") << "\n";
    return absl::OkStatus();
  }
  if (command == "describe" || command == "tiers") {
    if (pos.empty() || pos.size() > 2)
      return absl::InvalidArgumentError(command + " MODEL [VERSION]");
    auto info = client.Describe(pos[0], pos.size() > 1 ? pos[1] : "latest");
    if (!info.ok()) return info.status();
    double mbit = 10;
    if (absl::Status s = number("--bandwidth", &mbit); !s.ok()) return s;
    if (mbit <= 0)
      return absl::InvalidArgumentError("--bandwidth must be positive");
    if (command == "describe" && args.Has("--json")) {
      out << ToJson(*info).dump(1) << "\n";
      return absl::OkStatus();
    }
    if (command == "describe") {
      out << info->model << "/" << info->version
          << (info->description.empty() ? "" : "  " + info->description)
          << "\n";
      out << "source checkpoint: " << info->source_bytes
          << " bytes\npolicy: " << info->layer_policy << "\n";
      if (!info->base_version.empty())
        out << "deltas on version: " << info->base_version << "\n";
    }
    PrintTiers(*info, mbit, out);
    if (command == "describe") PrintLayers(*info, out);
    return absl::OkStatus();
  }
  if (command == "warm") {
    if (pos.empty())
      return absl::InvalidArgumentError("warm MODEL [VERSION [TIER...]]");
    std::vector<std::string> tiers(pos.size() > 2 ? pos.begin() + 2 : pos.end(),
                                   pos.end());
    return client.Warm(pos[0], pos.size() > 1 ? pos[1] : "latest", tiers);
  }
  if (IsFleetCommand(command))
    return RunFleetCommand(command, args, client, out);
  if (command == "health") {
    auto serving = client.Health();
    if (!serving.ok()) return serving.status();
    out << (*serving ? "SERVING" : "NOT_SERVING") << "\n";
    return *serving ? absl::OkStatus()
                    : absl::UnavailableError(
                          "the server is not serving (draining?)");
  }
  if (command == "rm") {
    if (pos.size() != 2) return absl::InvalidArgumentError("rm MODEL VERSION");
    return client.Delete(pos[0], pos[1]);
  }
  if (command == "pull") {
    if (pos.size() != 1 || flag("-o").empty())
      return absl::InvalidArgumentError("pull MODEL[@VERSION] -o OUT");
    PullOptions options;
    std::vector<std::string> parts =
        absl::StrSplit(pos[0], absl::MaxSplits('@', 1));
    options.model = parts[0];
    if (parts.size() > 1) options.version = parts[1];
    options.output_path = flag("-o");
    options.int8_output = args.Has("--int8");
    options.tier.name = flag("--tier");
    options.base_dir = flag("--base-dir");
    options.http_blobs = !args.Has("--grpc-only");
    options.decode_arriving = !args.Has("--decode-whole-layers");
    options.coarse_tier = flag("--progressive");
    options.coarse_output_path = flag("--coarse-out");
    if (options.coarse_tier.empty() && !options.coarse_output_path.empty()) {
      return absl::InvalidArgumentError(
          "--coarse-out needs --progressive COARSE");
    }
    options.on_coarse = [&](const CoarseModel& coarse) {
      if (terminal) out << "\n";
      out << absl::StrFormat(
          "coarse model (tier %s) usable after %d bytes in %.2f s%s\n",
          coarse.tier, coarse.bytes, coarse.seconds,
          coarse.output_path.empty() ? "" : " -> " + coarse.output_path);
    };
    double max_bytes = 0, mbit = 0, within = 0;
    RETURN_IF_ERROR(
        number("--max-accuracy-drop", &options.tier.max_accuracy_drop));
    if (args.Has("--min-output-cosine")) {
      double cosine = -2;
      RETURN_IF_ERROR(args.Number("--min-output-cosine", -1, &cosine));
      if (cosine > 1) {
        return absl::InvalidArgumentError(
            "--min-output-cosine needs a number from -1 to 1");
      }
      options.tier.min_output_cosine = cosine;
    }
    for (const auto& [name, target] :
         {std::make_pair("--max-bytes", &max_bytes),
          std::make_pair("--min-sqnr", &options.tier.min_sqnr_db),
          std::make_pair("--bandwidth", &mbit),
          std::make_pair("--within", &within)}) {
      if (absl::Status s = number(name, target); !s.ok()) return s;
    }
    double limit = 0, shard_bytes = 0;
    if (absl::Status s = number("--limit", &limit); !s.ok()) return s;
    if (absl::Status s = number("--shard-bytes", &shard_bytes); !s.ok())
      return s;
    if (shard_bytes != 0 && shard_bytes < 1)
      return absl::InvalidArgumentError("--shard-bytes needs N >= 1");
    options.shard_bytes = static_cast<uint64_t>(shard_bytes);
    options.max_bytes_per_second = limit * 1e6 / 8;
    options.tier.max_bytes = static_cast<uint64_t>(max_bytes);
    options.tier.bits_per_second = mbit * 1e6;
    options.tier.within = absl::Seconds(within);
    if ((mbit > 0) != (within > 0))
      return absl::InvalidArgumentError("--bandwidth and --within go together");
    int last_percent = -1, last_pending = 0;
    options.progress = [&](const PullProgress& p) {
      if (p.tiers_pending > 0) {  // before the stream: sizes not known yet
        const std::string line = absl::StrFormat(
            "waiting for the server to encode and measure %d tier(s) (%.0fs)",
            p.tiers_pending, p.seconds);
        if (terminal) {
          progress << "\r" << line << std::flush;
        } else if (p.tiers_pending != last_pending) {
          out << line << "\n";
        }
        last_pending = p.tiers_pending;
        return;
      }
      if (last_pending > 0 && terminal) progress << "\n";
      last_pending = 0;
      if (terminal) {
        out << std::flush;
        progress << Bar(p) << std::flush;
        return;
      }
      const int percent =
          p.total_bytes
              ? static_cast<int>(100 * p.bytes_received / p.total_bytes)
              : 0;
      if (percent / 25 != last_percent / 25) {
        out << absl::StrFormat("received %d/%d bytes (%d%%)\n",
                               p.bytes_received, p.total_bytes, percent);
        last_percent = percent;
      }
    };
    auto result = client.Pull(options);
    if (terminal) out << "\n";
    if (!result.ok()) return result.status();
    out << absl::StrFormat(
        "pulled %s/%s tier %s: %d bytes in %.2f s, every layer verified "
        "(SHA-256) -> %s\n",
        options.model, result->version, result->tier, result->bytes,
        result->seconds, options.output_path);
    if (result->http_layers)
      out << result->http_layers
          << " layers over HTTP from the manifest's blob URL\n";
    for (const std::string& warning : result->warnings)
      out << "warning: " << Printable(warning) << "\n";
    if (result->reconnects)
      out << "reconnected " << result->reconnects << " times\n";
    if (result->layers_refetched)
      out << "refetched " << result->layers_refetched
          << " layers that failed verification\n";
    if (!result->coarse.tier.empty()) {
      out << result->delta_layers << " layers refined " << result->coarse.tier
          << " as P pictures\n";
    } else if (result->delta_layers) {
      out << result->delta_layers << " layers came as deltas on "
          << (options.base_dir.empty() ? "their bases, sent along"
                                       : "layers held in " + options.base_dir)
          << "\n";
    }
    if (result->delta_fallback)
      out << "a held base layer was damaged: pulled without deltas\n";
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown command '", command, "'"));
}

}  // namespace

int RunCli(const std::vector<std::string>& in, std::ostream& out,
           std::ostream& err, bool terminal) {
  auto usage_error = [&](absl::string_view message) {
    err << "weightcast: " << Printable(message) << "\n\n" << kUsage;
    return kExitUsage;
  };
  const ArgSpec global{
      {"--server", "--tls-ca", "--tls-cert", "--tls-key", "--token"},
      {"-h", "--help"},
      /*stop_at_positional=*/true};
  absl::StatusOr<Args> program = Args::Parse(in, global);
  if (!program.ok()) return usage_error(program.status().message());
  if (program->Has("-h") || program->Has("--help")) {
    out << kUsage;
    return kExitOk;
  }
  if (program->consumed() >= in.size()) {
    err << kUsage;
    return kExitUsage;
  }
  ConnectOptions connect;
  connect.address = program->Get("--server", connect.address);
  connect.token = program->Get("--token");
  for (const auto& [name, target] :
       {std::make_pair("--tls-ca", &connect.tls_root_certs_pem),
        std::make_pair("--tls-cert", &connect.tls_cert_chain_pem),
        std::make_pair("--tls-key", &connect.tls_private_key_pem)}) {
    if (!program->Has(name)) continue;
    auto pem = ReadFileBytes(program->Get(name));
    if (!pem.ok()) {
      err << "weightcast: " << pem.status().message() << "\n";
      return kExitUsage;
    }
    target->assign(pem->begin(), pem->end());
  }
  const std::string command = in[program->consumed()];
  auto spec = CommandSpecs().find(command);
  if (spec == CommandSpecs().end())
    return usage_error(absl::StrCat("unknown command ", Echo(command)));
  absl::StatusOr<Args> args = Args::Parse(
      absl::MakeConstSpan(in).subspan(program->consumed() + 1), spec->second);
  if (!args.ok()) return usage_error(args.status().message());
  auto client = Client::Connect(connect);
  if (!client.ok()) {
    err << "weightcast: " << client.status().message() << "\n";
    return kExitNetwork;
  }
  TerminalSafeBuffer safe_out_buffer(out), safe_err_buffer(err);
  std::ostream safe_out(&safe_out_buffer), safe_err(&safe_err_buffer);
  const absl::Status status =
      Run(command, *args, **client, safe_out, out, terminal);
  safe_out.flush();
  if (!status.ok()) {
    safe_err << "weightcast " << command << ": " << status.message() << "\n"
             << std::flush;
  }
  return ExitCode(status);
}

}  // namespace weightcast
