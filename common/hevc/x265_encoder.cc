#include "common/hevc/x265_encoder.h"

#include <x265.h>

#include <memory>

#include "absl/strings/str_cat.h"

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
  for (uint32_t i = 0; i < count; ++i) out->insert(out->end(), nals[i].payload, nals[i].payload + nals[i].sizeBytes);
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodeIntraPicture(const Plane& plane,
                                                        const HevcEncodeOptions& options) {
  if (plane.width < kCtuSize || plane.height < kCtuSize || plane.width % kMinCuSize ||
      plane.height % kMinCuSize ||
      plane.pixels.size() != static_cast<size_t>(plane.width) * plane.height) {
    return absl::InvalidArgumentError(
        absl::StrCat("picture ", plane.width, "x", plane.height, " cannot be encoded"));
  }
  if (!options.lossless && (options.qp < 0 || options.qp > 51)) {
    return absl::InvalidArgumentError(absl::StrCat("QP ", options.qp, " is outside 0..51"));
  }
  std::unique_ptr<x265_param, ParamDeleter> param(x265_param_alloc());
  if (!param) return absl::ResourceExhaustedError("x265_param_alloc failed");
  // Tune psnr: no psycho-visual tricks; weights are judged by squared error, not by eyes.
  if (x265_param_default_preset(param.get(), options.preset.c_str(), "psnr") < 0) {
    return absl::InvalidArgumentError(absl::StrCat("unknown x265 preset '", options.preset, "'"));
  }
  x265_param* p = param.get();
  p->logLevel = X265_LOG_NONE;
  p->sourceWidth = plane.width;
  p->sourceHeight = plane.height;
  p->internalCsp = X265_CSP_I400;
  p->internalBitDepth = 8;
  p->fpsNum = 1;
  p->fpsDenom = 1;
  p->maxCUSize = kCtuSize;
  p->minCUSize = kMinCuSize;
  p->keyframeMax = 1;  // all-intra
  p->bframes = 0;
  p->lookaheadDepth = 0;
  p->bRepeatHeaders = 1;  // parameter sets travel with the picture: each tile decodes alone
  p->bEmitInfoSEI = 0;    // otherwise ~2.2 KB of settings text per picture
  p->frameNumThreads = 1;  // parallelism is across tiles, one encoder per thread
  p->numaPools = "none";
  p->bEnableWavefront = 0;
  p->lookaheadThreads = 0;
  p->rc.rateControlMode = X265_RC_CQP;
  p->rc.qp = options.qp;
  p->rc.ipFactor = 1.0;  // otherwise the I-slice QP is 3 below the one asked for
  p->rc.aqMode = X265_AQ_NONE;
  p->rc.cuTree = 0;
  p->bLossless = options.lossless ? 1 : 0;

  std::unique_ptr<x265_encoder, EncoderDeleter> encoder(x265_encoder_open(p));
  if (!encoder) {
    return absl::InternalError(absl::StrCat("x265 refused a ", plane.width, "x", plane.height,
                                            " picture with preset ", options.preset));
  }
  std::unique_ptr<x265_picture, PictureDeleter> picture(x265_picture_alloc());
  x265_picture_init(p, picture.get());
  picture->colorSpace = X265_CSP_I400;
  picture->bitDepth = 8;
  picture->planes[0] = const_cast<uint8_t*>(plane.pixels.data());  // x265 only reads it
  picture->stride[0] = plane.width;

  std::vector<uint8_t> bitstream;
  x265_nal* nals = nullptr;
  uint32_t count = 0;
  if (x265_encoder_encode(encoder.get(), &nals, &count, picture.get(), nullptr) < 0) {
    return absl::InternalError("x265_encoder_encode failed");
  }
  Append(nals, count, &bitstream);
  for (int frames = 1; frames > 0;) {  // flush: at most one picture is in flight
    frames = x265_encoder_encode(encoder.get(), &nals, &count, nullptr, nullptr);
    if (frames < 0) return absl::InternalError("x265_encoder_encode failed while flushing");
    Append(nals, count, &bitstream);
  }
  if (bitstream.empty()) return absl::InternalError("x265 produced no bitstream");
  return bitstream;
}

}  // namespace weightcast
