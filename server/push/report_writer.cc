#include "server/push/report_writer.h"

#include <map>
#include <string>
#include <utility>

namespace weightcast {

ReportWriter::ReportWriter(
    FleetRegistry* registry,
    std::function<absl::Status(const DeviceRecord&)> check,
    size_t max_queued_bytes)
    : registry_(registry),
      check_(std::move(check)),
      max_queued_bytes_(max_queued_bytes),
      thread_([this] { Run(); }) {}

ReportWriter::~ReportWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void ReportWriter::Add(DeviceRecord report,
                       std::function<void(absl::Status)> done) {
  const size_t bytes = sizeof(Pending) + report.device_id.size() +
                       report.model.size() + report.version.size() +
                       report.tier.size() + report.state.size() +
                       report.reason.size();
  {
    absl::MutexLock lock(&mu_);
    if (queued_bytes_ + bytes <= max_queued_bytes_ && !stopping_) {
      queued_bytes_ += bytes;
      ++added_;
      queue_.push_back({std::move(report), std::move(done), bytes});
      return;
    }
  }
  done(absl::UnavailableError(
      "too many device reports are waiting to be stored; report again later"));
}

void ReportWriter::Flush() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = added_;
  const auto stored = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stored_ >= target;
  };
  mu_.Await(absl::Condition(&stored));
}

void ReportWriter::Run() {
  std::vector<Pending> batch;
  std::vector<DeviceRecord> records;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, and everything is stored
      const size_t n = std::min(queue_.size(), kMaxReportBatch);
      batch.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    records.clear();
    std::map<std::pair<std::string, std::string>, absl::Status> checked;
    std::vector<absl::Status> outcome(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      const DeviceRecord& r = batch[i].report;
      auto [it, fresh] = checked.try_emplace({r.model, r.version});
      if (fresh) it->second = check_(r);
      outcome[i] = it->second;
      if (outcome[i].ok()) records.push_back(r);
    }
    const absl::Status stored =
        records.empty() ? absl::OkStatus() : registry_->PutDevices(records);
    batches_.fetch_add(1);
    size_t bytes = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      bytes += batch[i].bytes;
      batch[i].done(outcome[i].ok() ? stored : outcome[i]);
    }
    {
      absl::MutexLock lock(&mu_);
      queued_bytes_ -= bytes;
      stored_ += batch.size();
    }
    batch.clear();
  }
}

}  // namespace weightcast
