// weightcast-pack: packs a checkpoint into one file per tier offline (no
// server), reports bytes and fidelity per layer and tier, explains the layer
// policy, and unpacks a tier file back to a float checkpoint. main() only
// parses arguments and maps the status to an exit code.
#ifndef WEIGHTCAST_CLIENT_PACK_PACK_COMMAND_H_
#define WEIGHTCAST_CLIENT_PACK_PACK_COMMAND_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/pack/packed_model.h"

namespace weightcast {

struct PackCommand {
  enum class Mode { kPack, kUnpack, kExplain, kHelp };
  Mode mode = Mode::kPack;
  std::string input;   // checkpoint (pack, explain) or tier file (unpack)
  std::string output;  // directory (pack) or safetensors file (unpack)
  std::string tiers = "q22,q27,q32,q37,lossless";
  bool int8_output = false;  // --unpack: int8 + scales instead of float32
  // --eval-bundle: the TorchScript module and tensor file whose inputs give
  // each picture layer's column scales (PackOptions::input_rms).
  std::string eval_module, eval_data;
  PackOptions pack;
};

extern const char kPackUsage[];

// INVALID_ARGUMENT with a one-line reason for bad usage.
absl::StatusOr<PackCommand> ParsePackCommand(
    const std::vector<std::string>& args);

absl::Status RunPackCommand(const PackCommand& command, std::ostream& out);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_PACK_PACK_COMMAND_H_
