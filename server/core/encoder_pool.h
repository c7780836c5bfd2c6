// A fixed set of worker threads that run encode jobs. Jobs carry an urgency
// flag shared by their group (one tier's encoding): urgent jobs (someone is
// waiting for them) run before the rest, oldest first, and a group queued as
// background work becomes urgent the moment a pull starts waiting for it. Each
// worker runs one job at a time and each job creates its own x265 encoders, so
// a worker is one encoder's thread. Thread-safe. Stop() drops jobs not started
// and joins.
#ifndef WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_
#define WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

class EncoderPool {
 public:
  // Set to true when someone waits for the group's jobs; never set back.
  using Urgency = std::shared_ptr<std::atomic<bool>>;

  explicit EncoderPool(int workers);  // workers <= 0: one per core
  ~EncoderPool();
  EncoderPool(const EncoderPool&) = delete;
  EncoderPool& operator=(const EncoderPool&) = delete;

  // false once Stop() has begun: the job will never run. `first`: ahead of
  // the jobs of its urgency (the tile helpers of a running layer: finishing a
  // layer before another starts keeps memory to the layers in progress).
  bool Submit(Urgency urgency, std::function<void()> job, bool first = false);
  // Drops jobs not started, waits for running ones, joins the workers.
  // Idempotent.
  void Stop();

  int workers() const { return static_cast<int>(threads_.size()); }
  int busy() const;
  int queued() const;

 private:
  void Work();

  mutable absl::Mutex mu_;
  struct Job {
    Urgency urgency;
    std::function<void()> run;
  };
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);  // submission order
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // joined by Stop()
  absl::Mutex stop_mu_;               // serializes Stop()
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_
