// The server's metrics, defined once, behind typed functions, exposed in the
// Prometheus text format (there is no prometheus-cpp in Debian). Every name has
// the prefix "weightcast_" and a base unit. Label values are values the server
// made or keeps (tier names of its registry, registered model names, results,
// gRPC code names), never what a client sent. Thread-safe.
#ifndef WEIGHTCAST_SERVER_METRICS_METRICS_H_
#define WEIGHTCAST_SERVER_METRICS_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

class ServerMetrics {
 public:
  ServerMetrics();

  void RecordLayerEncode(const std::string& tier, double seconds);
  void RecordTilesEncoded(const std::string& tier, int64_t tiles);
  void RecordCacheHit();
  void RecordCacheMiss();
  void RecordCacheEviction();
  void RecordBytesStreamed(const std::string& tier, uint64_t bytes);
  void StreamStarted();
  void StreamEnded();
  void RecordResume();
  // One model classified on a version's evaluation bundle: a READY tier's
  // accuracy, or a candidate of an accuracy tier's search.
  void RecordAccuracyEvaluation(const std::string& tier);
  // "ok", "invalid", "exists", "too_large", "deadline", "error"
  void RecordRegistration(const std::string& result);
  void RecordPullError(const std::string& code);   // gRPC code name
  void RecordWatchEvent(const std::string& type);  // "assignment" | "keepalive"
  // A GET|HEAD /v1/blobs answer: its HTTP status and the body bytes written.
  void RecordBlobAnswer(int status, uint64_t body_bytes);

  // The families read at scrape time from the rest of the server. Each callback
  // must be cheap, thread-safe, and callable for as long as Exposition() is.
  struct EncoderReadings {
    std::function<double()> queued, busy,
        workers;  // encode jobs waiting, workers running, workers
    std::function<double()> cache_bytes;  // bytes of all encoded tiers stored
  };
  void AddEncoderFamilies(EncoderReadings readings);
  // Free and total bytes of the file system holding `data_dir` (for "disk
  // nearly full" alerts).
  void AddDataDirFamilies(const std::string& data_dir);
  struct FleetReadings {
    std::function<double()> subscribers;  // open Watch streams
    // Devices by (model, last reported state).
    std::function<
        std::vector<std::pair<std::pair<std::string, std::string>, uint64_t>>()>
        device_states;
  };
  void AddFleetFamilies(FleetReadings readings);
  // Calls cancelled for stalling past --upload-seconds or --pull-seconds.
  void AddDeadlineCancels(std::function<double()> cancelled);

  // Gauges read at scrape time (queue depth, busy workers, ...).
  void AddGauge(const std::string& name, const std::string& help,
                std::function<double()> read);
  // A family read at scrape time: each sample's labels (name, value) and value.
  // `type` is "gauge" or "counter" (then the callback must only grow).
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void AddCollector(
      const std::string& name, const std::string& help, const std::string& type,
      std::function<std::vector<std::pair<Labels, double>>()> read);

  // The whole exposition, text format 0.0.4.
  std::string Exposition() const;

 private:
  struct Family {
    std::string help;
    std::string type;                       // counter | gauge | histogram
    std::map<std::string, double> samples;  // "{labels}" or "" -> value
  };
  void Add(const std::string& name, const std::string& labels, double value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::vector<int64_t>>> histograms_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::pair<double, int64_t>>>
      histogram_sums_ ABSL_GUARDED_BY(mu_);
  struct Collector {
    std::string name, help, type;
    std::function<std::vector<std::pair<Labels, double>>()> read;
  };
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_METRICS_METRICS_H_
