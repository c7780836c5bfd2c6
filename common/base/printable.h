// Text that came from the other side of a connection or from a file, made safe
// to put in an error message, a log line or a terminal: control characters (C0,
// DEL, C1) and bytes that are not UTF-8 become \xNN escapes, and echoed input
// is cut to a bounded length. Pure; thread-safe.
#ifndef WEIGHTCAST_COMMON_BASE_PRINTABLE_H_
#define WEIGHTCAST_COMMON_BASE_PRINTABLE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace weightcast {

// At most this many bytes of an input are echoed back in a message.
inline constexpr size_t kMaxEchoBytes = 200;

// `text` with every control character and every byte outside valid UTF-8
// written as "\xNN" (a backslash is written "\\"); printable ASCII and valid
// UTF-8 pass unchanged.
std::string Printable(absl::string_view text);
// For a terminal: as Printable, but newlines and tabs pass and backslashes are
// not doubled (text that is already escaped stays readable).
std::string TerminalSafe(absl::string_view text);

// `input` quoted for an error message: 'Printable(input)', cut after
// kMaxEchoBytes input bytes and marked "... (N bytes)" when longer.
std::string Echo(absl::string_view input);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_PRINTABLE_H_
