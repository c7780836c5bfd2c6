#include "common/base/printable.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace weightcast {
namespace {

// The length of the valid, printable UTF-8 sequence starting text[0] (1 for
// printable ASCII), or 0 when it is a control character, a C1 control
// (U+0080..U+009F) or not valid UTF-8.
size_t PrintableSequence(absl::string_view text) {
  const auto byte = [&](size_t i) {
    return static_cast<unsigned char>(text[i]);
  };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return lead >= 0x20 && lead != 0x7f ? 1 : 0;
  size_t length;
  uint32_t code;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2, code = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3, code = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4, code = lead & 0x07;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
    code = (code << 6) | (byte(i) & 0x3f);
  }
  const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < smallest[length] || code > 0x10ffff ||
      (code >= 0xd800 && code <= 0xdfff))
    return 0;                  // overlong, surrogate
  if (code <= 0x9f) return 0;  // C1 controls
  return length;
}

std::string Escape(absl::string_view text, bool for_terminal) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const bool layout = for_terminal && (text[0] == '\n' || text[0] == '\t');
    const size_t n = layout ? 1 : PrintableSequence(text);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02x",
                            static_cast<unsigned char>(text[0]));
      text.remove_prefix(1);
    } else {
      if (n == 1 && text[0] == '\\' && !for_terminal) out += '\\';
      out.append(text.data(), n);
      text.remove_prefix(n);
    }
  }
  return out;
}

}  // namespace

std::string Printable(absl::string_view text) {
  return Escape(text, /*for_terminal=*/false);
}

std::string TerminalSafe(absl::string_view text) {
  return Escape(text, /*for_terminal=*/true);
}

std::string Echo(absl::string_view input) {
  if (input.size() <= kMaxEchoBytes)
    return absl::StrCat("'", Printable(input), "'");
  size_t cut = kMaxEchoBytes;  // not inside a UTF-8 sequence
  while (cut > 0 && (static_cast<unsigned char>(input[cut]) & 0xc0) == 0x80)
    --cut;
  return absl::StrCat("'", Printable(input.substr(0, cut)), "'... (",
                      input.size(), " bytes)");
}

}  // namespace weightcast
