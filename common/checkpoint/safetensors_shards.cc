#include "common/checkpoint/safetensors_shards.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/names.h"
#include "common/base/printable.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

absl::Status Invalid(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
}

bool IsDirectory(const std::string& path) {
  std::error_code error;
  return fs::is_directory(path, error);
}

// The index's weight_map, in the order the index lists it, and its shards in
// order of first mention.
struct Index {
  std::vector<std::pair<std::string, std::string>> weight_map;
  std::vector<std::string> shards;
};

absl::StatusOr<Index> ReadIndex(const std::string& path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error))
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  const uint64_t size = fs::file_size(path, error);
  if (error || size > kMaxSafetensorsIndexBytes) {
    return Invalid(path, absl::StrCat("larger than ", kMaxSafetensorsIndexBytes,
                                      " bytes; not an index"));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size)))
    return Invalid(path, "cannot read");
  // Reject names that repeat in weight_map (JSON parsers keep the last).
  absl::flat_hash_set<std::string> keys;
  std::string repeated;
  bool in_map = false;
  const nlohmann::ordered_json index = nlohmann::ordered_json::parse(
      text,
      [&](int depth, nlohmann::ordered_json::parse_event_t event,
          nlohmann::ordered_json& parsed) {
        using Event = nlohmann::ordered_json::parse_event_t;
        if (event == Event::key && depth == 1)
          in_map =
              parsed.is_string() && parsed.get<std::string>() == "weight_map";
        if (event == Event::key && depth == 2 && in_map && parsed.is_string() &&
            !keys.insert(parsed.get<std::string>()).second && repeated.empty())
          repeated = parsed.get<std::string>();
        return true;
      },
      /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object())
    return Invalid(path, "not a JSON object");
  auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object() || map->empty())
    return Invalid(path, "needs a non-empty object \"weight_map\"");
  if (!repeated.empty()) {
    return Invalid(path, absl::StrCat("weight_map names tensor ",
                                      Echo(repeated), " more than once"));
  }
  if (map->size() > kMaxShardedTensors) {
    return Invalid(path,
                   absl::StrCat("weight_map names ", map->size(),
                                " tensors; at most ", kMaxShardedTensors));
  }
  Index out;
  absl::flat_hash_set<std::string> shards;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it.value().is_string()) {
      return Invalid(path, absl::StrCat("weight_map: tensor ", Echo(it.key()),
                                        " maps to something not a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    // A name in the index's folder, never a path: no '/', no "..".
    if (absl::Status name = CheckName("shard name", shard, 255); !name.ok()) {
      return Invalid(path, absl::StrCat("weight_map: tensor ", Echo(it.key()),
                                        ": ", name.message()));
    }
    if (!absl::EndsWith(shard, ".safetensors")) {
      return Invalid(
          path, absl::StrCat("weight_map: tensor ", Echo(it.key()), ": shard ",
                             Echo(shard), " is not a .safetensors file"));
    }
    if (shards.insert(shard).second) {
      if (shards.size() > kMaxSafetensorsShards) {
        return Invalid(
            path, absl::StrCat("more than ", kMaxSafetensorsShards, " shards"));
      }
      out.shards.push_back(shard);
    }
    out.weight_map.emplace_back(it.key(), shard);
  }
  return out;
}

// Every tensor name in one shard only.
absl::Status CheckUnique(const SafetensorsShards& shards) {
  absl::flat_hash_map<std::string, size_t> shard_of;
  for (size_t s = 0; s < shards.paths.size(); ++s) {
    for (const SafetensorsEntry& entry : shards.headers[s].entries) {
      auto [it, inserted] = shard_of.emplace(entry.tensor.name, s);
      if (!inserted) {
        return Invalid(shards.paths[s],
                       absl::StrCat("tensor '", entry.tensor.name,
                                    "' is also in ", shards.paths[it->second]));
      }
      if (shard_of.size() > kMaxShardedTensors) {
        return Invalid(shards.paths[s],
                       absl::StrCat("the shards hold more than ",
                                    kMaxShardedTensors, " tensors"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsShards> FromIndex(const std::string& index_path) {
  ASSIGN_OR_RETURN(const Index index, ReadIndex(index_path));
  const fs::path dir = fs::path(index_path).parent_path();
  SafetensorsShards out;
  absl::flat_hash_map<std::string, size_t> shard_number;
  for (const std::string& shard : index.shards) {
    const std::string path = (dir / shard).string();
    std::error_code error;
    if (!fs::is_regular_file(path, error)) {
      return absl::NotFoundError(absl::StrCat(
          index_path, ": shard '", shard, "' (of tensor '",
          [&] {
            for (const auto& [t, s] : index.weight_map)
              if (s == shard) return t;
            return std::string();
          }(),
          "') is not in ", dir.string()));
    }
    ASSIGN_OR_RETURN(SafetensorsHeader header, ReadSafetensorsHeader(path));
    shard_number[shard] = out.paths.size();
    out.paths.push_back(path);
    out.headers.push_back(std::move(header));
  }
  RETURN_IF_ERROR(CheckUnique(out));
  // The index and the shards agree, tensor by tensor.
  absl::flat_hash_map<std::string, std::string> placed(index.weight_map.begin(),
                                                       index.weight_map.end());
  absl::flat_hash_set<std::string> held;
  for (size_t s = 0; s < out.paths.size(); ++s) {
    const std::string& shard = index.shards[s];
    for (const SafetensorsEntry& entry : out.headers[s].entries) {
      auto it = placed.find(entry.tensor.name);
      if (it == placed.end()) {
        return Invalid(
            out.paths[s],
            absl::StrCat("holds tensor '", entry.tensor.name, "', which ",
                         kSafetensorsIndexName, " does not name"));
      }
      if (it->second != shard) {
        return Invalid(out.paths[s],
                       absl::StrCat("holds tensor '", entry.tensor.name,
                                    "', which ", kSafetensorsIndexName,
                                    " places in shard '", it->second, "'"));
      }
      held.insert(entry.tensor.name);
    }
  }
  for (const auto& [tensor, shard] : index.weight_map) {
    if (!held.contains(tensor)) {
      return Invalid(index_path,
                     absl::StrCat("names tensor ", Echo(tensor), " in shard '",
                                  shard, "', which does not hold it"));
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<SafetensorsShards> OpenSafetensorsShards(
    const std::vector<std::string>& paths) {
  if (paths.empty())
    return absl::InvalidArgumentError("no checkpoint files given");
  if (paths.size() == 1 && IsDirectory(paths[0])) {
    const std::string index =
        (fs::path(paths[0]) / kSafetensorsIndexName).string();
    std::error_code error;
    if (!fs::is_regular_file(index, error)) {
      return absl::NotFoundError(
          absl::StrCat(paths[0], ": a folder without ", kSafetensorsIndexName));
    }
    return FromIndex(index);
  }
  if (paths.size() == 1 && absl::EndsWith(paths[0], ".json"))
    return FromIndex(paths[0]);
  if (paths.size() > kMaxSafetensorsShards) {
    return absl::InvalidArgumentError(
        absl::StrCat(paths.size(), " files; at most ", kMaxSafetensorsShards));
  }
  SafetensorsShards out;
  for (const std::string& path : paths) {
    if (IsDirectory(path) || absl::EndsWith(path, ".json")) {
      return Invalid(path, "a folder or index must be the only path given");
    }
    std::error_code error;
    if (!fs::is_regular_file(path, error))
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    ASSIGN_OR_RETURN(SafetensorsHeader header, ReadSafetensorsHeader(path));
    out.paths.push_back(path);
    out.headers.push_back(std::move(header));
  }
  RETURN_IF_ERROR(CheckUnique(out));
  return out;
}

absl::Status MergeSafetensorsShards(const SafetensorsShards& shards,
                                    const std::string& out_path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const SafetensorsHeader& shard : shards.headers) {
    for (const SafetensorsEntry& entry : shard.entries) {
      header[entry.tensor.name] = {
          {"dtype", std::string(SafetensorsDTypeCode(entry.tensor.dtype))},
          {"shape", entry.tensor.shape},
          {"data_offsets", {offset + entry.begin, offset + entry.end}}};
    }
    offset += shard.data_bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  if (text.size() > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the merged header would be ", text.size(),
                     " bytes; at most ", kMaxSafetensorsHeaderBytes));
  }
  const absl::Status status = [&]() -> absl::Status {
    std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
    if (!out)
      return absl::NotFoundError(absl::StrCat(out_path, ": cannot create"));
    char length[8];
    for (int i = 0; i < 8; ++i)
      length[i] =
          static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.write(length, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<char> buffer(1 << 20);
    for (size_t s = 0; s < shards.paths.size(); ++s) {
      const SafetensorsHeader& shard = shards.headers[s];
      std::ifstream in(shards.paths[s], std::ios::binary);
      in.seekg(static_cast<std::streamoff>(shard.data_offset));
      uint64_t left = shard.data_bytes;
      while (left > 0) {  // bounded: `left` shrinks every round or we return
        const size_t want =
            static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
        if (!in.read(buffer.data(), static_cast<std::streamsize>(want))) {
          return absl::DataLossError(
              absl::StrCat(shards.paths[s],
                           ": shorter than its header says (changed "
                           "while reading?)"));
        }
        out.write(buffer.data(), static_cast<std::streamsize>(want));
        left -= want;
      }
    }
    out.flush();
    if (!out) {
      return absl::ResourceExhaustedError(
          absl::StrCat(out_path, ": cannot write (disk full?)"));
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) std::remove(out_path.c_str());
  return status;
}

}  // namespace weightcast
