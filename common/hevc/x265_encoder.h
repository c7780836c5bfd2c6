// The x265 wrapper: encodes one picture as an all-intra HEVC bitstream at a
// constant QP, or a sequence of pictures as one IDR picture followed by P
// pictures, each predicted from the one before it (deltas between model
// versions, refinements of a coarse tier). The only file that includes x265.h.
// x265's rule is one encoder per thread, never reused after flush;
// EncodeIntraPicture opens, uses and closes its own encoder, so it may be
// called from any number of threads at once.
#ifndef WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_
#define WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/hevc/picture.h"

namespace weightcast {

// The preset the project measured as the best bytes-per-second trade
// (docs/BENCHMARKS.md).
inline constexpr char kDefaultX265Preset[] = "veryfast";
// The coding tools over it (docs/BENCHMARKS.md, "x265 coding tools"): full
// rate-distortion-optimized quantization, 5-7 % fewer bytes at equal SQNR on
// weights for 1.7-1.8x the encode CPU time (bytes go to every device, the
// encode happens once); and no deblocking filter, which changes neither bytes
// nor SQNR on weights but costs every client about 5 % of its decode CPU.
inline const std::vector<std::string>& DefaultX265Tools() {
  static const auto* tools =
      new std::vector<std::string>{"rdoq-level=2", "no-deblock"};
  return *tools;
}

struct HevcEncodeOptions {
  int qp = 27;  // 0..51; the QP every CTU is coded at (rc.ipFactor = 1.0)
  bool lossless = false;  // bit-exact; qp is ignored
  std::string preset =
      kDefaultX265Preset;  // x265 preset name: ultrafast … placebo
  // x265 coding tools over the preset's ("no-sao", "rdoq-level=1"), applied in
  // order with x265_param_parse. Only tools that change how a picture is coded
  // are accepted (kX265Tools); rate control, sizes, threads and headers stay
  // this wrapper's. Empty: the preset as tuned for PSNR.
  std::vector<std::string> tools = DefaultX265Tools();
};

// The tool names HevcEncodeOptions::tools accepts (each also as "no-NAME"
// where x265 has a switch): rdoq-level, sao, deblock, tskip, tskip-fast,
// psy-rd, psy-rdoq, tu-intra-depth, rd, signhide, strong-intra-smoothing,
// limit-tu, rskip.
bool IsX265Tool(absl::string_view name);

// Encodes `plane` (width and height multiples of kMinCuSize, at least kCtuSize)
// as one IDR picture with its parameter sets, Annex-B framed. Errors: bad
// options or picture size.
absl::StatusOr<std::vector<uint8_t>> EncodeIntraPicture(
    const Plane& plane, const HevcEncodeOptions& options);

// A coded sequence, Annex-B framed, split where a decoder can be given its
// parts separately.
struct HevcSequence {
  std::vector<uint8_t> parameter_sets;  // VPS, SPS, PPS
  std::vector<std::vector<uint8_t>>
      pictures;  // each picture's slice NAL units, in order
};

// Encodes `frames` (all one size, as for EncodeIntraPicture) as an IDR picture
// and then P pictures, picture i predicted from the reconstruction of picture
// i-1 only. `qps[i]` is picture i's QP (empty: options.qp for all). Picture 0
// is coded exactly as EncodeIntraPicture codes it with the same options: its
// slice NAL units are byte-identical (CQP, no lookahead, no adaptive
// quantization: nothing later pictures hold reaches it); only the parameter
// sets differ. Lossless is not offered here.
absl::StatusOr<HevcSequence> EncodeSequence(
    const std::vector<const Plane*>& frames, const std::vector<int>& qps,
    const HevcEncodeOptions& options);

// Splits an Annex-B bitstream of one picture (or of a P picture with parameter
// sets) into its parameter sets and its other NAL units (pictures[0]).
HevcSequence SplitParameterSets(absl::Span<const uint8_t> bitstream);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_HEVC_X265_ENCODER_H_
