#include "common/hevc/de265_decoder.h"

#include <libde265/de265.h>

#include <climits>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

struct DecoderDeleter {
  void operator()(de265_decoder_context* ctx) const { de265_free_decoder(ctx); }
};

// libde265 prints warnings to stderr by default; its verbosity is process-wide.
void QuietLibde265() {
  static std::once_flag once;
  std::call_once(once, [] { de265_set_verbosity(0); });
}

// A decode of one picture never needs more steps than this; a bitstream that
// does is hostile.
constexpr int kMaxDecodeSteps = 1 << 20;

absl::Status Damaged(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("HEVC bitstream damaged: ", what));
}

}  // namespace

absl::StatusOr<Plane> DecodeIntraPicture(absl::Span<const uint8_t> bitstream,
                                         int width, int height) {
  ASSIGN_OR_RETURN(std::vector<Plane> pictures,
                   DecodeSequence(bitstream, width, height, 1));
  return std::move(pictures[0]);
}

absl::StatusOr<std::vector<Plane>> DecodeSequence(
    absl::Span<const uint8_t> bitstream, int width, int height,
    int max_pictures) {
  if (bitstream.empty() || bitstream.size() > static_cast<size_t>(INT_MAX)) {
    return Damaged(absl::StrCat(bitstream.size(), " bytes"));
  }
  QuietLibde265();
  std::unique_ptr<de265_decoder_context, DecoderDeleter> ctx(
      de265_new_decoder());
  if (!ctx) return absl::ResourceExhaustedError("de265_new_decoder failed");
  de265_error err =
      de265_push_data(ctx.get(), bitstream.data(),
                      static_cast<int>(bitstream.size()), 0, nullptr);
  if (!de265_isOK(err)) return Damaged(de265_get_error_text(err));
  err = de265_flush_data(ctx.get());
  if (!de265_isOK(err)) return Damaged(de265_get_error_text(err));

  std::vector<Plane> planes;
  int more = 1;
  for (int step = 0; more; ++step) {
    if (step == kMaxDecodeSteps) return Damaged("decoder did not finish");
    err = de265_decode(ctx.get(), &more);
    if (err == DE265_ERROR_WAITING_FOR_INPUT_DATA) break;  // all input consumed
    if (!de265_isOK(err)) return Damaged(de265_get_error_text(err));
    if (de265_error warning = de265_get_warning(ctx.get());
        warning != DE265_OK) {
      return Damaged(de265_get_error_text(warning));
    }
    while (const de265_image* image = de265_get_next_picture(ctx.get())) {
      if (static_cast<int>(planes.size()) == max_pictures) {
        return Damaged(
            max_pictures == 1
                ? "more than one picture"
                : absl::StrCat("more than ", max_pictures, " pictures"));
      }
      if (de265_get_chroma_format(image) != de265_chroma_mono ||
          de265_get_bits_per_pixel(image, 0) != 8 ||
          de265_get_image_width(image, 0) != width ||
          de265_get_image_height(image, 0) != height) {
        return Damaged(
            absl::StrCat("picture is ", de265_get_image_width(image, 0), "x",
                         de265_get_image_height(image, 0), ", expected ", width,
                         "x", height, " 8-bit monochrome"));
      }
      int stride = 0;
      const uint8_t* pixels = de265_get_image_plane(image, 0, &stride);
      if (pixels == nullptr || stride < width) return Damaged("no luma plane");
      Plane& plane = planes.emplace_back();
      plane.width = width;
      plane.height = height;
      plane.pixels.resize(static_cast<size_t>(width) * height);
      for (int y = 0; y < height; ++y) {
        std::memcpy(plane.pixels.data() + static_cast<size_t>(y) * width,
                    pixels + static_cast<size_t>(y) * stride, width);
      }
    }
  }
  if (planes.empty()) return Damaged("no picture decoded");
  return planes;
}

}  // namespace weightcast
