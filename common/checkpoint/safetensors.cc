#include "common/checkpoint/safetensors.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

using Json = nlohmann::json;

constexpr std::pair<absl::string_view, DType> kDTypeCodes[] = {
    {"F32", DType::kFloat32},   {"F16", DType::kFloat16},
    {"BF16", DType::kBFloat16}, {"F64", DType::kFloat64},
    {"I8", DType::kInt8},       {"U8", DType::kUInt8},
    {"I16", DType::kInt16},     {"I32", DType::kInt32},
    {"I64", DType::kInt64},     {"BOOL", DType::kBool},
};

absl::Status Invalid(absl::string_view source, absl::string_view tensor,
                     absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      source, tensor.empty() ? "" : absl::StrCat(": tensor '", tensor, "'"),
      ": ", what));
}

using Entry = SafetensorsEntry;

absl::StatusOr<Entry> ParseEntry(const std::string& name, const Json& entry,
                                 uint64_t data_size, absl::string_view source) {
  if (!entry.is_object())
    return Invalid(source, name, "header entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string() ||
      shape_it == entry.end() || !shape_it->is_array() ||
      offsets_it == entry.end() || !offsets_it->is_array() ||
      offsets_it->size() != 2) {
    return Invalid(source, name,
                   "needs dtype, shape and data_offsets [begin, end]");
  }
  Entry out;
  Tensor& tensor = out.tensor;
  tensor.name = name;
  const std::string code = dtype_it->get<std::string>();
  auto code_it =
      std::find_if(std::begin(kDTypeCodes), std::end(kDTypeCodes),
                   [&](const auto& entry) { return entry.first == code; });
  if (code_it == std::end(kDTypeCodes))
    return Invalid(source, name, absl::StrCat("unsupported dtype ", code));
  tensor.dtype = code_it->second;
  if (shape_it->size() > 8)
    return Invalid(source, name, "more than 8 dimensions");
  for (const Json& dim : *shape_it) {
    if (!dim.is_number_unsigned())
      return Invalid(source, name, "shape holds a value that is not a size");
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX))
      return Invalid(source, name, "dimension too large");
    tensor.shape.push_back(static_cast<int64_t>(d));
  }
  auto elements = CheckedNumElements(tensor.shape, "shape");
  if (!elements.ok()) return Invalid(source, name, elements.status().message());
  const Json& begin_json = (*offsets_it)[0];
  const Json& end_json = (*offsets_it)[1];
  if (!begin_json.is_number_unsigned() || !end_json.is_number_unsigned()) {
    return Invalid(source, name, "data_offsets are not sizes");
  }
  out.begin = begin_json.get<uint64_t>();
  out.end = end_json.get<uint64_t>();
  if (out.begin > out.end || out.end > data_size) {
    return Invalid(source, name,
                   absl::StrCat("data_offsets [", out.begin, ", ", out.end,
                                "] lie outside the ", data_size,
                                " data bytes of the file"));
  }
  const uint64_t bytes = out.end - out.begin;
  const uint64_t element_size = DTypeSize(tensor.dtype);
  if (static_cast<uint64_t>(*elements) > bytes / element_size ||
      static_cast<uint64_t>(*elements) * element_size != bytes) {
    return Invalid(
        source, name,
        absl::StrCat("shape ", ShapeToString(tensor.shape), " of ", code,
                     " does not match its ", bytes, " data bytes"));
  }
  return out;
}

// As the reference implementation (huggingface/safetensors) requires: the
// tensors' byte ranges, in order of their offsets, tile the data exactly, from
// byte 0 to the end, without overlaps or holes. Without this, one region could
// be claimed by many tensors (each a full copy here).
absl::Status CheckTiling(const std::vector<Entry>& sorted, uint64_t data_size,
                         absl::string_view source) {
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : sorted) {
    const std::string range =
        absl::StrCat("data_offsets [", entry.begin, ", ", entry.end, "]");
    if (entry.begin < covered) {
      return Invalid(source, entry.tensor.name,
                     absl::StrCat(range, " overlap those of tensor '",
                                  previous->tensor.name, "' [", previous->begin,
                                  ", ", previous->end, "]"));
    }
    if (entry.begin > covered) {
      return Invalid(
          source, entry.tensor.name,
          absl::StrCat(range, " leave a hole: data bytes [", covered, ", ",
                       entry.begin, ") before it ",
                       previous ? absl::StrCat("(after tensor '",
                                               previous->tensor.name, "') ")
                                : "",
                       "belong to no tensor"));
    }
    covered = entry.end;
    previous = &entry;
  }
  if (covered != data_size) {
    return Invalid(
        source, "",
        absl::StrCat("the last ", data_size - covered, " data bytes",
                     previous ? absl::StrCat(" (after tensor '",
                                             previous->tensor.name, "')")
                              : "",
                     " belong to no tensor"));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

uint64_t LittleEndian64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return value;
}

// The header JSON (without the 8 length bytes) against `data_size` bytes of
// data.
absl::StatusOr<SafetensorsHeader> ParseHeader(absl::string_view json,
                                              uint64_t data_size,
                                              absl::string_view source) {
  // Track keys of the top-level object to reject names that repeat (JSON
  // parsers keep the last).
  absl::flat_hash_set<std::string> keys;
  std::string repeated;
  Json header = Json::parse(
      json.begin(), json.end(),
      [&](int depth, Json::parse_event_t event, Json& parsed) {
        if (event == Json::parse_event_t::key && depth == 1 &&
            parsed.is_string()) {
          if (!keys.insert(parsed.get<std::string>()).second &&
              repeated.empty())
            repeated = parsed.get<std::string>();
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return Invalid(source, "", "header is not a JSON object");
  if (!repeated.empty())
    return Invalid(source, repeated, "name appears more than once");
  SafetensorsHeader out;
  out.data_offset = 8 + json.size();
  out.data_bytes = data_size;
  std::vector<Entry>& entries = out.entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(Entry entry,
                     ParseEntry(it.key(), it.value(), data_size, source));
    entries.push_back(std::move(entry));
  }
  // By (begin, end): a zero-size tensor comes before the tensor that starts
  // where it sits.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) {
                     return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
                   });
  RETURN_IF_ERROR(CheckTiling(entries, data_size, source));
  return out;
}

}  // namespace

absl::StatusOr<Model> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                       absl::string_view source) {
  if (bytes.size() < 8)
    return Invalid(source, "", "too short to be a safetensors file");
  const uint64_t header_size = LittleEndian64(bytes.data());
  if (header_size > kMaxSafetensorsHeaderBytes ||
      header_size > bytes.size() - 8) {
    return Invalid(source, "",
                   absl::StrCat("header length ", header_size, " exceeds the ",
                                bytes.size() - 8, " bytes after it"));
  }
  ASSIGN_OR_RETURN(
      SafetensorsHeader header,
      ParseHeader(
          absl::string_view(reinterpret_cast<const char*>(bytes.data() + 8),
                            header_size),
          bytes.size() - 8 - header_size, source));
  const absl::Span<const uint8_t> data = bytes.subspan(header.data_offset);
  Model model;
  for (Entry& entry : header.entries) {
    entry.tensor.data.assign(data.begin() + entry.begin,
                             data.begin() + entry.end);
    model.tensors.push_back(std::move(entry.tensor));
  }
  return model;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  uint8_t length[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(length), 8))
    return Invalid(path, "", "too short to be a safetensors file");
  const uint64_t header_size = LittleEndian64(length);
  if (header_size > kMaxSafetensorsHeaderBytes || header_size > file_size - 8) {
    return Invalid(path, "",
                   absl::StrCat("header length ", header_size, " exceeds the ",
                                file_size - 8, " bytes after it"));
  }
  std::string json(header_size, '\0');
  if (!in.read(json.data(), static_cast<std::streamsize>(header_size)))
    return Invalid(path, "", "cannot read the header");
  return ParseHeader(json, file_size - 8 - header_size, path);
}

absl::StatusOr<Model> ReadSafetensorsFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, ReadFileBytes(path));
  return ParseSafetensors(bytes, path);
}

absl::string_view SafetensorsDTypeCode(DType dtype) {
  auto code =
      std::find_if(std::begin(kDTypeCodes), std::end(kDTypeCodes),
                   [&](const auto& entry) { return entry.second == dtype; });
  return code == std::end(kDTypeCodes) ? "" : code->first;
}

absl::Status CheckTensorLayout(const TensorLayout& t) {
  ASSIGN_OR_RETURN(
      const int64_t elements,
      CheckedNumElements(t.shape, absl::StrCat("tensor '", t.name, "'")));
  if (static_cast<uint64_t>(elements) * DTypeSize(t.dtype) != t.bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", t.name, "': ", t.bytes, " bytes do not match its shape"));
  }
  return absl::OkStatus();
}

std::string SafetensorsHeaderBytes(const std::vector<TensorLayout>& tensors,
                                   uint64_t* data_bytes) {
  nlohmann::ordered_json header =
      nlohmann::ordered_json::object();  // keys in tensor order
  uint64_t offset = 0;
  for (const TensorLayout& tensor : tensors) {
    header[tensor.name] = {
        {"dtype", std::string(SafetensorsDTypeCode(tensor.dtype))},
        {"shape", tensor.shape},
        {"data_offsets", {offset, offset + tensor.bytes}}};
    offset += tensor.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out;
  out.reserve(8 + text.size());
  for (int i = 0; i < 8; ++i)
    out.push_back(
        static_cast<char>(static_cast<uint64_t>(text.size()) >> (8 * i)));
  out += text;
  if (data_bytes != nullptr) *data_bytes = offset;
  return out;
}

std::vector<uint8_t> SerializeSafetensors(const Model& model) {
  std::vector<TensorLayout> layout;
  layout.reserve(model.tensors.size());
  for (const Tensor& tensor : model.tensors)
    layout.push_back({tensor.name, tensor.dtype, tensor.shape,
                      static_cast<uint64_t>(tensor.data.size())});
  uint64_t data_bytes = 0;
  const std::string header = SafetensorsHeaderBytes(layout, &data_bytes);
  std::vector<uint8_t> out;
  out.reserve(header.size() + data_bytes);
  out.insert(out.end(), header.begin(), header.end());
  for (const Tensor& tensor : model.tensors)
    out.insert(out.end(), tensor.data.begin(), tensor.data.end());
  return out;
}

absl::Status WriteSafetensorsFile(const Model& model, const std::string& path) {
  return WriteFileAtomically(path, SerializeSafetensors(model));
}

}  // namespace weightcast
