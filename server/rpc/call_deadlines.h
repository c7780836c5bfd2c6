// Server-side time limits for long calls (uploads, pulls): a call still running
// when its limit passes is cancelled, whatever deadline the client set (or did
// not set), so a stalled or trickling client cannot hold a handler thread and
// its buffers forever. One thread; safe to use from every handler.
#ifndef WEIGHTCAST_SERVER_RPC_CALL_DEADLINES_H_
#define WEIGHTCAST_SERVER_RPC_CALL_DEADLINES_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace weightcast {

class CallDeadlines {
 public:
  CallDeadlines();
  ~CallDeadlines();  // stops the thread; every Guard must be gone
  CallDeadlines(const CallDeadlines&) = delete;
  CallDeadlines& operator=(const CallDeadlines&) = delete;

  // Watches one call while alive. A handler checks expired() between reads and
  // writes to end the call itself with DEADLINE_EXCEEDED; a call blocked on a
  // silent client is cancelled a little later (min(limit, 5 s) after the
  // deadline; the client then sees CANCELLED).
  class Guard {
   public:
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    bool expired() const { return absl::Now() >= deadline_; }

   private:
    friend class CallDeadlines;
    Guard(CallDeadlines* owner, absl::Time deadline, absl::Time cancel_at,
          uint64_t id)
        : owner_(owner), deadline_(deadline), cancel_at_(cancel_at), id_(id) {}
    CallDeadlines* const owner_;
    const absl::Time deadline_;
    const absl::Time cancel_at_;
    const uint64_t id_;
  };

  std::unique_ptr<Guard> Watch(grpc::ServerContext* context,
                               absl::Duration limit);
  // The same with what cancelling the call means (`cancel` runs on the deadline
  // thread, under its lock: never after the Guard is gone, and must not call
  // back into CallDeadlines).
  std::unique_ptr<Guard> Watch(std::function<void()> cancel,
                               absl::Duration limit);

  uint64_t cancelled() const {
    return cancelled_.load();
  }  // calls cancelled so far

 private:
  void Run();

  absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> calls_
      ABSL_GUARDED_BY(mu_);  // by cancel time
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> cancelled_{0};
  std::thread thread_;
};

}  // namespace weightcast

#endif  // WEIGHTCAST_SERVER_RPC_CALL_DEADLINES_H_
