// A fixed set of worker threads that run encode jobs. Jobs someone is waiting for (a pull) run
// before background work (warming). Each worker runs one job at a time and each job creates its
// own x265 encoders, so a worker is one encoder's thread. Thread-safe. The destructor stops
// taking jobs, drops those not started, and joins every worker.
#ifndef WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_
#define WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace weightcast {

class EncoderPool {
 public:
  enum class Priority { kWaiting, kBackground };

  explicit EncoderPool(int workers);  // workers <= 0: one per core
  ~EncoderPool();
  EncoderPool(const EncoderPool&) = delete;
  EncoderPool& operator=(const EncoderPool&) = delete;

  // false once Stop() has begun: the job will never run.
  bool Submit(Priority priority, std::function<void()> job);
  // Drops jobs not started, waits for running ones, joins the workers. Idempotent.
  void Stop();

  int workers() const { return static_cast<int>(threads_.size()); }
  int busy() const;
  int queued() const;

 private:
  void Work();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> waiting_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> background_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // joined by Stop()
  absl::Mutex stop_mu_;               // serializes Stop()
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_CORE_ENCODER_POOL_H_
