// The command line of the three binaries (weightcastd, weightcast,
// weightcast-pack), parsed one way. Options are declared: "--name VALUE" (or
// "-o VALUE") and switches ("--int8"); every other word is positional. An
// undeclared option, an option without its value, or a number out of its range
// is INVALID_ARGUMENT naming the option (the value echoed bounded and
// printable). A repeated option: the last one counts. Plain values.
#ifndef WEIGHTCAST_COMMON_BASE_ARGS_H_
#define WEIGHTCAST_COMMON_BASE_ARGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace weightcast {

struct ArgSpec {
  std::vector<std::string> values;    // options followed by a value
  std::vector<std::string> switches;  // options on their own
  // Stops at the first positional word, which is left unparsed (a program's
  // own options before its command's).
  bool stop_at_positional = false;
};

class Args {
 public:
  static absl::StatusOr<Args> Parse(absl::Span<const std::string> in,
                                    const ArgSpec& spec);
  // argv[1..argc) as strings.
  static std::vector<std::string> FromArgv(int argc, char** argv);

  bool Has(absl::string_view name) const;
  // The option's value, or `fallback` when it was not given.
  std::string Get(absl::string_view name,
                  absl::string_view fallback = "") const;
  // The option's integer value within lo..hi; `*value` is left alone when the
  // option was not given.
  absl::Status Int(absl::string_view name, int64_t lo, int64_t hi,
                   int64_t* value) const;
  absl::Status Int(absl::string_view name, int lo, int hi, int* value) const;
  absl::Status Int(absl::string_view name, uint64_t lo, uint64_t hi,
                   uint64_t* value) const;
  // The option's number, at least `lo`; `*value` is left alone when absent.
  absl::Status Number(absl::string_view name, double lo, double* value) const;

  const std::vector<std::string>& positional() const { return positional_; }
  // How many words of `in` were parsed (all, unless stop_at_positional).
  size_t consumed() const { return consumed_; }

 private:
  std::map<std::string, std::string, std::less<>> options_;
  std::vector<std::string> positional_;
  size_t consumed_ = 0;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_BASE_ARGS_H_
