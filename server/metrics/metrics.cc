#include "server/metrics/metrics.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace weightcast {
namespace {

constexpr double kEncodeBuckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                     2.5,  5,    10,  30,   60};

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
  struct Declaration {
    const char* name;
    const char* type;
    const char* help;
  };
  static constexpr Declaration kFamilies[] = {
      {"weightcast_tiles_encoded_total", "counter",
       "HEVC tiles (and whole non-picture layers) encoded, by tier."},
      {"weightcast_layers_encoded_total", "counter",
       "Layers encoded, by tier."},
      {"weightcast_cache_hits_total", "counter",
       "Pulls and manifests served from an encoded tier."},
      {"weightcast_cache_misses_total", "counter",
       "Pulls and manifests that had to wait for an encoding."},
      {"weightcast_cache_evictions_total", "counter",
       "Encoded tiers evicted from the cache."},
      {"weightcast_streamed_bytes_total", "counter",
       "Layer bytes sent by Pull, by tier."},
      {"weightcast_pull_resumes_total", "counter",
       "Pulls that resumed at a layer and offset."},
      {"weightcast_pull_errors_total", "counter",
       "Pulls that ended with an error, by gRPC code."},
      {"weightcast_registrations_total", "counter",
       "RegisterModel calls, by result."},
      {"weightcast_active_streams", "gauge", "Pull streams in progress."},
      {"weightcast_accuracy_evaluations_total", "counter",
       "Models classified on an evaluation bundle (encoded tiers and the "
       "candidates of accuracy tiers' searches), by tier."},
      {"weightcast_watch_events_total", "counter",
       "Events sent to watching devices, by type."},
      {"weightcast_blob_requests_total", "counter",
       "GET and HEAD /v1/blobs answers (--blob-listen), by HTTP status."},
      {"weightcast_blob_bytes_sent_total", "counter",
       "Blob bytes written in /v1/blobs answer bodies."},
  };
  absl::MutexLock lock(&mu_);
  for (const Declaration& family : kFamilies)
    families_[family.name] = Family{family.help, family.type, {}};
  families_["weightcast_active_streams"].samples[""] = 0;
  families_["weightcast_cache_hits_total"].samples[""] = 0;
  families_["weightcast_cache_misses_total"].samples[""] = 0;
  families_["weightcast_cache_evictions_total"].samples[""] = 0;
  families_["weightcast_pull_resumes_total"].samples[""] = 0;
  families_["weightcast_blob_bytes_sent_total"].samples[""] = 0;
}

void ServerMetrics::Add(const std::string& name, const std::string& labels,
                        double value) {
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
  Add("weightcast_tiles_encoded_total", "{" + Label("tier", tier) + "}",
      static_cast<double>(tiles));
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

void ServerMetrics::RecordBytesStreamed(const std::string& tier,
                                        uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_streamed_bytes_total", "{" + Label("tier", tier) + "}",
      static_cast<double>(bytes));
}

void ServerMetrics::StreamStarted() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_active_streams", "", 1);
}

void ServerMetrics::StreamEnded() {
  absl::MutexLock lock(&mu_);
  Add("weightcast_active_streams", "", -1);
}

void ServerMetrics::RecordAccuracyEvaluation(const std::string& tier) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_accuracy_evaluations_total", "{" + Label("tier", tier) + "}",
      1);
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

void ServerMetrics::RecordBlobAnswer(int status, uint64_t body_bytes) {
  absl::MutexLock lock(&mu_);
  Add("weightcast_blob_requests_total",
      "{" + Label("code", std::to_string(status)) + "}", 1);
  Add("weightcast_blob_bytes_sent_total", "", static_cast<double>(body_bytes));
}

void ServerMetrics::AddEncoderFamilies(EncoderReadings readings) {
  AddGauge("weightcast_encode_queue_depth", "Encode jobs waiting for a worker.",
           std::move(readings.queued));
  AddGauge("weightcast_encode_busy_workers", "Encoder workers running a job.",
           std::move(readings.busy));
  AddGauge("weightcast_encode_workers", "Encoder workers.",
           std::move(readings.workers));
  AddGauge("weightcast_cache_bytes", "Bytes of all encoded tiers stored.",
           std::move(readings.cache_bytes));
}

void ServerMetrics::AddDataDirFamilies(const std::string& data_dir) {
  for (const bool free : {true, false}) {
    AddGauge(
        free ? "weightcast_data_free_bytes" : "weightcast_data_capacity_bytes",
        free ? "Bytes available to weightcastd on the data directory's file "
               "system."
             : "Size of the data directory's file system.",
        [data_dir, free] {
          std::error_code error;
          const std::filesystem::space_info space =
              std::filesystem::space(data_dir, error);
          return error ? 0.0
                       : static_cast<double>(free ? space.available
                                                  : space.capacity);
        });
  }
}

void ServerMetrics::AddFleetFamilies(FleetReadings readings) {
  AddGauge("weightcast_watch_subscribers",
           "Devices watching (open Watch streams).",
           std::move(readings.subscribers));
  AddCollector(
      "weightcast_rollout_devices", "Devices by model and last reported state.",
      "gauge", [read = std::move(readings.device_states)] {
        std::vector<std::pair<Labels, double>> samples;
        for (const auto& [key, n] : read()) {
          samples.push_back({{{"model", key.first}, {"state", key.second}},
                             static_cast<double>(n)});
        }
        return samples;
      });
}

void ServerMetrics::AddDeadlineCancels(std::function<double()> cancelled) {
  AddCollector(
      "weightcast_deadline_cancels_total",
      "Calls cancelled for stalling past --upload-seconds or --pull-seconds.",
      "counter", [read = std::move(cancelled)] {
        return std::vector<std::pair<Labels, double>>{{{}, read()}};
      });
}

void ServerMetrics::AddGauge(const std::string& name, const std::string& help,
                             std::function<double()> read) {
  AddCollector(name, help, "gauge", [read = std::move(read)] {
    return std::vector<std::pair<Labels, double>>{{Labels{}, read()}};
  });
}

void ServerMetrics::AddCollector(
    const std::string& name, const std::string& help, const std::string& type,
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
      absl::StrAppend(&out, "# HELP ", name, " ", family.help, "\n# TYPE ",
                      name, " ", family.type, "\n");
      for (const auto& [labels, value] : family.samples)
        absl::StrAppend(&out, name, labels, " ", Number(value), "\n");
    }
    absl::StrAppend(&out,
                    "# HELP weightcast_encode_seconds Seconds to encode one "
                    "layer, by tier.\n",
                    "# TYPE weightcast_encode_seconds histogram\n");
    const auto histogram = histograms_.find("weightcast_encode_seconds");
    if (histogram != histograms_.end()) {
      for (const auto& [tier, buckets] : histogram->second) {
        const auto& [sum, count] =
            histogram_sums_.at("weightcast_encode_seconds").at(tier);
        for (size_t i = 0; i < buckets.size(); ++i) {
          absl::StrAppend(&out, "weightcast_encode_seconds_bucket{",
                          Label("tier", tier), ",",
                          Label("le", Number(kEncodeBuckets[i])), "} ",
                          buckets[i], "\n");
        }
        absl::StrAppend(&out, "weightcast_encode_seconds_bucket{",
                        Label("tier", tier), ",le=\"+Inf\"} ", count, "\n");
        absl::StrAppend(&out, "weightcast_encode_seconds_sum{",
                        Label("tier", tier), "} ", Number(sum), "\n");
        absl::StrAppend(&out, "weightcast_encode_seconds_count{",
                        Label("tier", tier), "} ", count, "\n");
      }
    }
  }
  for (const Collector& c :
       collectors) {  // read outside the lock: callbacks take their own
    absl::StrAppend(&out, "# HELP ", c.name, " ", c.help, "\n# TYPE ", c.name,
                    " ", c.type, "\n");
    for (const auto& [labels, value] : c.read()) {
      std::string text;
      for (const auto& [key, label_value] : labels)
        absl::StrAppend(&text, text.empty() ? "" : ",",
                        Label(key, label_value));
      absl::StrAppend(&out, c.name,
                      text.empty() ? "" : absl::StrCat("{", text, "}"), " ",
                      Number(value), "\n");
    }
  }
  return out;
}

}  // namespace weightcast
