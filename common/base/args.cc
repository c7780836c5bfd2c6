#include "common/base/args.h"

#include <algorithm>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/printable.h"

namespace weightcast {
namespace {

bool Contains(const std::vector<std::string>& names, absl::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

absl::StatusOr<Args> Args::Parse(absl::Span<const std::string> in,
                                 const ArgSpec& spec) {
  Args args;
  size_t i = 0;
  for (; i < in.size(); ++i) {
    const std::string& word = in[i];
    if (word.size() < 2 || word[0] != '-') {
      if (spec.stop_at_positional) break;
      args.positional_.push_back(word);
    } else if (Contains(spec.switches, word)) {
      args.options_[word] = "";
    } else if (Contains(spec.values, word)) {
      if (i + 1 >= in.size())
        return absl::InvalidArgumentError(absl::StrCat(word, " needs a value"));
      args.options_[word] = in[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option ", Echo(word)));
    }
  }
  args.consumed_ = i;
  return args;
}

std::vector<std::string> Args::FromArgv(int argc, char** argv) {
  return std::vector<std::string>(argv + std::min(argc, 1), argv + argc);
}

bool Args::Has(absl::string_view name) const {
  return options_.find(name) != options_.end();
}

std::string Args::Get(absl::string_view name,
                      absl::string_view fallback) const {
  auto it = options_.find(name);
  return it == options_.end() ? std::string(fallback) : it->second;
}

absl::Status Args::Int(absl::string_view name, int64_t lo, int64_t hi,
                       int64_t* value) const {
  auto it = options_.find(name);
  if (it == options_.end()) return absl::OkStatus();
  int64_t n = 0;
  if (!absl::SimpleAtoi(it->second, &n) || n < lo || n > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " needs a whole number within ", lo, "..", hi,
                     ", not ", Echo(it->second)));
  }
  *value = n;
  return absl::OkStatus();
}

absl::Status Args::Int(absl::string_view name, int lo, int hi,
                       int* value) const {
  int64_t n = *value;
  absl::Status status = Int(name, int64_t{lo}, int64_t{hi}, &n);
  *value = static_cast<int>(n);
  return status;
}

absl::Status Args::Int(absl::string_view name, uint64_t lo, uint64_t hi,
                       uint64_t* value) const {
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t n = static_cast<int64_t>(std::min(*value, kMax));
  absl::Status status = Int(name, static_cast<int64_t>(std::min(lo, kMax)),
                            static_cast<int64_t>(std::min(hi, kMax)), &n);
  if (status.ok() && Has(name)) *value = static_cast<uint64_t>(n);
  return status;
}

absl::Status Args::Number(absl::string_view name, double lo,
                          double* value) const {
  auto it = options_.find(name);
  if (it == options_.end()) return absl::OkStatus();
  double x = 0;
  if (!absl::SimpleAtod(it->second, &x) || !(x >= lo) ||
      x > std::numeric_limits<double>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " needs a number >= ", lo, ", not ", Echo(it->second)));
  }
  *value = x;
  return absl::OkStatus();
}

}  // namespace weightcast
