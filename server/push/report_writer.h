// Writes device reports to the FleetRegistry in batches: Add() queues a report
// and returns at once; one thread takes everything queued and stores it in one
// transaction, then tells each report's caller, so thousands of devices
// reporting after a rollout cost a few transactions, not a commit each.
// Memory is bounded: past max_queued_bytes (kMaxQueuedReportBytes) of queued
// reports, Add() answers UNAVAILABLE at once. Thread-safe; the registry must
// outlive it.
#ifndef WEIGHTCAST_SERVER_PUSH_REPORT_WRITER_H_
#define WEIGHTCAST_SERVER_PUSH_REPORT_WRITER_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/fleet_registry.h"

namespace weightcast {

// The most report bytes (ids, names, reason) queued before Add() refuses.
inline constexpr size_t kMaxQueuedReportBytes = size_t{16} << 20;
// The most reports stored in one transaction.
inline constexpr size_t kMaxReportBatch = 4096;

class ReportWriter {
 public:
  // `check` runs on the writer's thread once per distinct (model, version) of
  // a batch, before the batch is stored: a report it fails gets its status and
  // is not stored (so a slow check, like a registry lookup, is paid per batch,
  // not per report).
  ReportWriter(FleetRegistry* registry,
               std::function<absl::Status(const DeviceRecord&)> check,
               size_t max_queued_bytes = kMaxQueuedReportBytes);
  ~ReportWriter();  // stores what is queued, then joins the thread
  ReportWriter(const ReportWriter&) = delete;
  ReportWriter& operator=(const ReportWriter&) = delete;

  // Queues `report`; `done` runs with the outcome of its transaction, on the
  // writer's thread (or at once, on the caller's, with UNAVAILABLE when the
  // queue is full). `done` must not call back into the ReportWriter.
  void Add(DeviceRecord report, std::function<void(absl::Status)> done);
  // Returns once every report queued before the call is stored.
  void Flush();

  uint64_t batches() const { return batches_.load(); }  // transactions so far

 private:
  struct Pending {
    DeviceRecord report;
    std::function<void(absl::Status)> done;
    size_t bytes;
  };
  void Run();

  FleetRegistry* const registry_;
  const std::function<absl::Status(const DeviceRecord&)> check_;
  const size_t max_queued_bytes_;
  absl::Mutex mu_;
  std::vector<Pending> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t added_ ABSL_GUARDED_BY(mu_) = 0;   // reports ever queued
  uint64_t stored_ ABSL_GUARDED_BY(mu_) = 0;  // of those, written (or failed)
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> batches_{0};  // read by metrics and tests
  std::thread thread_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_PUSH_REPORT_WRITER_H_
