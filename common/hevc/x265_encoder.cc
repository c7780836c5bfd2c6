#include "common/hevc/x265_encoder.h"

#include <x265.h>

#include <functional>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"
#include "common/hevc/nal_units.h"

namespace weightcast {
namespace {

struct ParamDeleter {
  void operator()(x265_param* p) const { x265_param_free(p); }
};
struct EncoderDeleter {
  void operator()(x265_encoder* e) const { x265_encoder_close(e); }
};
struct PictureDeleter {
  void operator()(x265_picture* p) const { x265_picture_free(p); }
};

void Append(const x265_nal* nals, uint32_t count, std::vector<uint8_t>* out) {
  for (uint32_t i = 0; i < count; ++i)
    out->insert(out->end(), nals[i].payload,
                nals[i].payload + nals[i].sizeBytes);
}

absl::Status CheckPicture(const Plane& plane) {
  if (plane.width < kCtuSize || plane.height < kCtuSize ||
      plane.width % kMinCuSize || plane.height % kMinCuSize ||
      plane.pixels.size() != static_cast<size_t>(plane.width) * plane.height) {
    return absl::InvalidArgumentError(absl::StrCat(
        "picture ", plane.width, "x", plane.height, " cannot be encoded"));
  }
  return absl::OkStatus();
}

constexpr absl::string_view kTools[] = {"rdoq-level",
                                        "sao",
                                        "deblock",
                                        "tskip",
                                        "tskip-fast",
                                        "psy-rd",
                                        "psy-rdoq",
                                        "tu-intra-depth",
                                        "rd",
                                        "signhide",
                                        "strong-intra-smoothing",
                                        "limit-tu",
                                        "rskip"};

absl::Status CheckQp(int qp) {
  if (qp < 0 || qp > 51)
    return absl::InvalidArgumentError(
        absl::StrCat("QP ", qp, " is outside 0..51"));
  return absl::OkStatus();
}

// The parameters every encode shares; `keyframe_max` 1 is all-intra.
absl::StatusOr<std::unique_ptr<x265_param, ParamDeleter>> MakeParam(
    int width, int height, const HevcEncodeOptions& options, int keyframe_max) {
  std::unique_ptr<x265_param, ParamDeleter> param(x265_param_alloc());
  if (!param) return absl::ResourceExhaustedError("x265_param_alloc failed");
  // Tune psnr: no psycho-visual tricks; weights are judged by squared error,
  // not by eyes.
  if (x265_param_default_preset(param.get(), options.preset.c_str(), "psnr") <
      0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown x265 preset '", options.preset, "'"));
  }
  x265_param* p = param.get();
  for (const std::string& tool : options.tools) {
    const size_t equals = tool.find('=');
    const std::string name = tool.substr(0, equals);
    if (!IsX265Tool(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("x265 tool ", Echo(name), " is not one of the coding ",
                       "tools this wrapper lets through"));
    }
    const std::string value =
        equals == std::string::npos ? "" : tool.substr(equals + 1);
    if (x265_param_parse(
            p, name.c_str(),
            equals == std::string::npos ? nullptr : value.c_str()) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("x265 refused the tool ", Echo(tool)));
    }
  }
  p->logLevel = X265_LOG_NONE;
  p->sourceWidth = width;
  p->sourceHeight = height;
  p->internalCsp = X265_CSP_I400;
  p->internalBitDepth = 8;
  p->fpsNum = 1;
  p->fpsDenom = 1;
  p->maxCUSize = kCtuSize;
  p->minCUSize = kMinCuSize;
  p->keyframeMax = keyframe_max;
  p->keyframeMin = 1;
  p->scenecutThreshold = 0;  // a P picture never turns into an I picture
  p->bframes = 0;
  p->maxNumReferences = 1;  // the picture before, nothing older
  p->lookaheadDepth = 0;
  p->bRepeatHeaders =
      1;  // parameter sets travel with the picture: each tile decodes alone
  p->bEmitInfoSEI = 0;  // otherwise ~2.2 KB of settings text per picture
  p->frameNumThreads =
      1;  // parallelism is across tiles, one encoder per thread
  p->numaPools = "none";
  p->bEnableWavefront = 0;
  p->lookaheadThreads = 0;
  p->rc.rateControlMode = X265_RC_CQP;
  p->rc.qp = options.qp;
  p->rc.ipFactor =
      1.0;  // otherwise the I-slice QP is 3 below the one asked for
  p->rc.aqMode = X265_AQ_NONE;
  p->rc.cuTree = 0;
  p->bLossless = options.lossless ? 1 : 0;
  return param;
}

// Runs `frames` through one encoder; each call of `on_nals` gets the NAL units
// x265 returned for one picture (the first also carries the parameter sets).
absl::Status Encode(
    x265_param* p, const std::vector<const Plane*>& frames,
    const std::vector<int>& qps,
    const std::function<void(const x265_nal*, uint32_t)>& on_nals) {
  std::unique_ptr<x265_encoder, EncoderDeleter> encoder(x265_encoder_open(p));
  if (!encoder) {
    return absl::InternalError(absl::StrCat("x265 refused a ", p->sourceWidth,
                                            "x", p->sourceHeight,
                                            " picture with these options"));
  }
  std::unique_ptr<x265_picture, PictureDeleter> picture(x265_picture_alloc());
  x265_nal* nals = nullptr;
  uint32_t count = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    x265_picture_init(p, picture.get());
    picture->colorSpace = X265_CSP_I400;
    picture->bitDepth = 8;
    picture->planes[0] =
        const_cast<uint8_t*>(frames[i]->pixels.data());  // x265 only reads it
    picture->stride[0] = frames[i]->width;
    picture->pts = static_cast<int64_t>(i);
    if (!qps.empty() && qps[i] != p->rc.qp)
      picture->forceqp = qps[i] + 1;  // x265 reads QP + 1
    if (x265_encoder_encode(encoder.get(), &nals, &count, picture.get(),
                            nullptr) < 0) {
      return absl::InternalError("x265_encoder_encode failed");
    }
    if (count) on_nals(nals, count);
  }
  for (int more = 1; more > 0;) {  // flush
    more = x265_encoder_encode(encoder.get(), &nals, &count, nullptr, nullptr);
    if (more < 0)
      return absl::InternalError("x265_encoder_encode failed while flushing");
    if (count) on_nals(nals, count);
  }
  return absl::OkStatus();
}

bool IsParameterSet(const x265_nal& nal) {
  return nal.type == NAL_UNIT_VPS || nal.type == NAL_UNIT_SPS ||
         nal.type == NAL_UNIT_PPS;
}

}  // namespace

bool IsX265Tool(absl::string_view name) {
  if (absl::StartsWith(name, "no-")) name.remove_prefix(3);
  for (absl::string_view tool : kTools) {
    if (name == tool) return true;
  }
  return false;
}

absl::StatusOr<std::vector<uint8_t>> EncodeIntraPicture(
    const Plane& plane, const HevcEncodeOptions& options) {
  RETURN_IF_ERROR(CheckPicture(plane));
  if (!options.lossless) RETURN_IF_ERROR(CheckQp(options.qp));
  ASSIGN_OR_RETURN(auto param, MakeParam(plane.width, plane.height, options,
                                         /*keyframe_max=*/1));
  std::vector<uint8_t> bitstream;
  RETURN_IF_ERROR(Encode(param.get(), {&plane}, {},
                         [&](const x265_nal* nals, uint32_t count) {
                           Append(nals, count, &bitstream);
                         }));
  if (bitstream.empty())
    return absl::InternalError("x265 produced no bitstream");
  return bitstream;
}

absl::StatusOr<HevcSequence> EncodeSequence(
    const std::vector<const Plane*>& frames, const std::vector<int>& qps,
    const HevcEncodeOptions& options) {
  if (frames.empty() || options.lossless ||
      (!qps.empty() && qps.size() != frames.size())) {
    return absl::InvalidArgumentError(
        "a sequence needs pictures, one QP per picture or none, and a lossy "
        "QP");
  }
  for (const Plane* frame : frames) {
    RETURN_IF_ERROR(CheckPicture(*frame));
    if (frame->width != frames[0]->width ||
        frame->height != frames[0]->height) {
      return absl::InvalidArgumentError(
          "the pictures of a sequence must have one size");
    }
  }
  RETURN_IF_ERROR(CheckQp(options.qp));
  for (int qp : qps) RETURN_IF_ERROR(CheckQp(qp));
  ASSIGN_OR_RETURN(auto param,
                   MakeParam(frames[0]->width, frames[0]->height, options,
                             /*keyframe_max=*/1 << 20));
  HevcSequence sequence;
  RETURN_IF_ERROR(Encode(
      param.get(), frames, qps, [&](const x265_nal* nals, uint32_t count) {
        std::vector<uint8_t>& picture = sequence.pictures.emplace_back();
        for (uint32_t i = 0; i < count; ++i) {
          Append(&nals[i], 1,
                 IsParameterSet(nals[i]) ? &sequence.parameter_sets : &picture);
        }
      }));
  if (sequence.pictures.size() != frames.size()) {
    return absl::InternalError(absl::StrCat("x265 returned ",
                                            sequence.pictures.size(),
                                            " pictures for ", frames.size()));
  }
  return sequence;
}

HevcSequence SplitParameterSets(absl::Span<const uint8_t> bitstream) {
  HevcSequence split;
  std::vector<uint8_t>& picture = split.pictures.emplace_back();
  ForEachNalUnit(bitstream, [&](absl::Span<const uint8_t> unit, int type) {
    const bool parameter_set =
        type == NAL_UNIT_VPS || type == NAL_UNIT_SPS || type == NAL_UNIT_PPS;
    std::vector<uint8_t>& out = parameter_set ? split.parameter_sets : picture;
    out.insert(out.end(), unit.begin(), unit.end());
  });
  return split;
}

}  // namespace weightcast
