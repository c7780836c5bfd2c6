// Hugging Face sharded checkpoints: a folder holding
// model.safetensors.index.json (its "weight_map" names, for each tensor, the
// shard file that holds it) and the shards; or several safetensors files given
// one by one. Opening reads and checks the index and every shard's header
// (never their data); Merge writes them as one safetensors file, copying data
// in bounded chunks, so the result registers as one version. Every error names
// the index, the shard or the tensor at fault. Pure functions; thread-safe.
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_SHARDS_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_SHARDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/safetensors.h"

namespace weightcast {

inline constexpr char kSafetensorsIndexName[] = "model.safetensors.index.json";
inline constexpr uint64_t kMaxSafetensorsIndexBytes = 16 << 20;
inline constexpr size_t kMaxSafetensorsShards = 1024;
inline constexpr size_t kMaxShardedTensors = 1 << 16;

struct SafetensorsShards {
  std::vector<std::string> paths;          // in order
  std::vector<SafetensorsHeader> headers;  // one per path
};

// `paths`: one folder (holding kSafetensorsIndexName), one index file, or one
// or more safetensors files. With an index: its weight_map must be a JSON
// object of tensor name -> shard file name (1-255 of [A-Za-z0-9._-], ending in
// .safetensors: a name inside the index's folder, never a path), at most
// kMaxSafetensorsShards shards and kMaxShardedTensors tensors; every shard must
// exist and hold exactly the tensors the index places in it. In every case a
// tensor name must appear in one shard only. INVALID_ARGUMENT (NOT_FOUND for a
// missing file) naming the file and tensor otherwise.
absl::StatusOr<SafetensorsShards> OpenSafetensorsShards(
    const std::vector<std::string>& paths);

// Writes every shard's tensors (shard by shard, each in its order) as one
// safetensors file at `out_path`; removes it on failure. DATA_LOSS naming the
// shard when one changed size since it was opened.
absl::Status MergeSafetensorsShards(const SafetensorsShards& shards,
                                    const std::string& out_path);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_SAFETENSORS_SHARDS_H_
