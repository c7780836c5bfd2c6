#include "server/metrics/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace weightcast {
namespace {

constexpr double kEncodeBuckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

std::string Label(const std::string& name, const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\' || c == '"') escaped.push_back('\\');
    if (c == '\n') {
      escaped += "\\n";
      continue;
    }
    escaped.push_back(c);
  }
  return absl::StrCat(name, "=\"", escaped, "\"");
}

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

}  // namespace

ServerMetrics::ServerMetrics() {
  absl::MutexLock lock(&mu_);
  auto declare = [&](const std::string& name, const std::string& type, const std::string& help) {
    families_[name] = Family{help, type, {}};
  };
  declare("weightcast_tiles_encoded_total", "counter", "HEVC tiles (and whole non-picture layers) encoded, by tier.");
  declare("weightcast_layers_encoded_total", "counter", "Layers encoded, by tier.");
  declare("weightcast_cache_hits_total", "counter", "Pulls and manifests served from an encoded tier.");
  declare("weightcast_cache_misses_total", "counter", "Pulls and manifests that had to wait for an encoding.");
  declare("weightcast_cache_evictions_total", "counter", "Encoded tiers evicted from the cache.");
  declare("weightcast_streamed_bytes_total", "counter", "Layer bytes sent by Pull, by tier.");
  declare("weightcast_pull_resumes_total", "counter", "Pulls that resumed at a layer and offset.");
  declare("weightcast_pull_errors_total", "counter", "Pulls that ended with an error, by gRPC code.");
  declare("weightcast_registrations_total", "counter", "RegisterModel calls, by result.");
  declare("weightcast_active_streams", "gauge", "Pull streams in progress.");
  declare("weightcast_watch_events_total", "counter", "Events sent to watching devices, by type.");
  families_["weightcast_active_streams"].samples[""] = 0;
  families_["weightcast_cache_hits_total"].samples[""] = 0;
  families_["weightcast_cache_misses_total"].samples[""] = 0;
  families_["weightcast_cache_evictions_total"].samples[""] = 0;
  families_["weightcast_pull_resumes_total"].samples[""] = 0;
}

void ServerMetrics::Add(const std::string& name, const std::string& labels, double value) {
  families_[name].samples[labels] += value;
}

void ServerMetrics::RecordLayerEncode(const std::string& tier, double seconds) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_layers_encoded_total", "{" + Label("tier", tier) + "}", 1);
  auto& buckets = histograms_["weightcast_encode_seconds"][tier];
  if (buckets.empty()) buckets.assign(std::size(kEncodeBuckets), 0);
  for (size_t i = 0; i < std::size(kEncodeBuckets); ++i) {
    if (seconds <= kEncodeBuckets[i]) ++buckets[i];
  }
  auto& [sum, count] = histogram_sums_["weightcast_encode_seconds"][tier];
  sum += seconds;
  ++count;
}

void ServerMetrics::RecordTilesEncoded(const std::string& tier, int64_t tiles) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_tiles_encoded_total", "{" + Label("tier", tier) + "}", static_cast<double>(tiles));
}

void ServerMetrics::RecordCacheHit() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_cache_hits_total", "", 1);
}

void ServerMetrics::RecordCacheMiss() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_cache_misses_total", "", 1);
}

void ServerMetrics::RecordCacheEviction() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_cache_evictions_total", "", 1);
}

void ServerMetrics::RecordBytesStreamed(const std::string& tier, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_streamed_bytes_total", "{" + Label("tier", tier) + "}", static_cast<double>(bytes));
}

void ServerMetrics::StreamStarted() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_active_streams", "", 1);
}

void ServerMetrics::StreamEnded() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_active_streams", "", -1);
}

void ServerMetrics::RecordResume() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_pull_resumes_total", "", 1);
}

void ServerMetrics::RecordRegistration(const std::string& result) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_registrations_total", "{" + Label("result", result) + "}", 1);
}

void ServerMetrics::RecordPullError(const std::string& code) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_pull_errors_total", "{" + Label("code", code) + "}", 1);
}

void ServerMetrics::RecordWatchEvent(const std::string& type) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_watch_events_total", "{" + Label("type", type) + "}", 1);
}

void ServerMetrics::AddGauge(const std::string& name, const std::string& help, std::function<double()> read) {
  AddCollector(name, help, "gauge", [read = std::move(read)] {
    return std::vector<std::pair<Labels, double>>{{Labels{}, read()}};
  });
}

void ServerMetrics::AddCollector(const std::string& name, const std::string& help, const std::string& type,
                                 std::function<std::vector<std::pair<Labels, double>>()> read) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back({name, help, type, std::move(read)});
}

std::string ServerMetrics::Exposition() const {
  std::vector<Collector> collectors;
  std::string out;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
    for (const auto& [name, family] : families_) {
      absl::StrAppend(&out, "# HELP ", name, " ", family.help, "\n# TYPE ", name, " ", family.type, "\n");
      for (const auto& [labels, value] : family.samples) absl::StrAppend(&out, name, labels, " ", Number(value), "\n");
    }
    absl::StrAppend(&out, "# HELP weightcast_encode_seconds Seconds to encode one layer, by tier.\n",
                    "# TYPE weightcast_encode_seconds histogram\n");
    const auto histogram = histograms_.find("weightcast_encode_seconds");
    if (histogram != histograms_.end()) {
      for (const auto& [tier, buckets] : histogram->second) {
        const auto& [sum, count] = histogram_sums_.at("weightcast_encode_seconds").at(tier);
        for (size_t i = 0; i < buckets.size(); ++i) {
          absl::StrAppend(&out, "weightcast_encode_seconds_bucket{", Label("tier", tier), ",",
                          Label("le", Number(kEncodeBuckets[i])), "} ", buckets[i], "\n");
        }
        absl::StrAppend(&out, "weightcast_encode_seconds_bucket{", Label("tier", tier), ",le=\"+Inf\"} ", count, "\n");
        absl::StrAppend(&out, "weightcast_encode_seconds_sum{", Label("tier", tier), "} ", Number(sum), "\n");
        absl::StrAppend(&out, "weightcast_encode_seconds_count{", Label("tier", tier), "} ", count, "\n");
      }
    }
  }
  for (const Collector& c : collectors) {  // read outside the lock: callbacks take their own
    absl::StrAppend(&out, "# HELP ", c.name, " ", c.help, "\n# TYPE ", c.name, " ", c.type, "\n");
    for (const auto& [labels, value] : c.read()) {
      std::string text;
      for (const auto& [key, label_value] : labels) absl::StrAppend(&text, text.empty() ? "" : ",", Label(key, label_value));
      absl::StrAppend(&out, c.name, text.empty() ? "" : absl::StrCat("{", text, "}"), " ", Number(value), "\n");
    }
  }
  return out;
}

}  // namespace weightcast
