// Registers a checkpoint as version "v1" through the SDK (the upload path a
// user takes), for benchmarks that time what comes after; a failure ends the
// benchmark naming it.
#ifndef WEIGHTCAST_BENCH_REGISTER_H_
#define WEIGHTCAST_BENCH_REGISTER_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "client/sdk/client.h"

namespace weightcast {

inline void RegisterOrExit(const std::string& address, const std::string& model,
                           const std::string& path, const std::string& ladder) {
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect({address});
  absl::Status status = client.status();
  if (status.ok())
    status = (*client)->Register({model, "v1", path, ladder}).status();
  if (!status.ok()) {
    std::fprintf(stderr, "register %s failed: %s\n", model.c_str(),
                 status.ToString().c_str());
    std::exit(1);
  }
}

}  // namespace weightcast

#endif  // WEIGHTCAST_BENCH_REGISTER_H_
