#include "common/checkpoint/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

using Json = nlohmann::json;

constexpr std::pair<absl::string_view, DType> kDTypeCodes[] = {
    {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
    {"F64", DType::kFloat64}, {"I8", DType::kInt8},     {"U8", DType::kUInt8},
    {"I16", DType::kInt16},   {"I32", DType::kInt32},   {"I64", DType::kInt64},
    {"BOOL", DType::kBool},
};

absl::Status Invalid(absl::string_view source, absl::string_view tensor, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      source, tensor.empty() ? "" : absl::StrCat(": tensor '", tensor, "'"), ": ", what));
}

// The tensor described by one header entry; checks everything against `data_size`.
absl::StatusOr<std::pair<uint64_t, Tensor>> ParseEntry(const std::string& name, const Json& entry,
                                                       absl::Span<const uint8_t> data,
                                                       absl::string_view source) {
  if (!entry.is_object()) return Invalid(source, name, "header entry is not an object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string() || shape_it == entry.end() ||
      !shape_it->is_array() || offsets_it == entry.end() || !offsets_it->is_array() ||
      offsets_it->size() != 2) {
    return Invalid(source, name, "needs dtype, shape and data_offsets [begin, end]");
  }
  Tensor tensor;
  tensor.name = name;
  const std::string code = dtype_it->get<std::string>();
  auto code_it = std::find_if(std::begin(kDTypeCodes), std::end(kDTypeCodes),
                              [&](const auto& entry) { return entry.first == code; });
  if (code_it == std::end(kDTypeCodes)) return Invalid(source, name, absl::StrCat("unsupported dtype ", code));
  tensor.dtype = code_it->second;
  if (shape_it->size() > 8) return Invalid(source, name, "more than 8 dimensions");
  for (const Json& dim : *shape_it) {
    if (!dim.is_number_unsigned()) return Invalid(source, name, "shape holds a value that is not a size");
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(INT64_MAX)) return Invalid(source, name, "dimension too large");
    tensor.shape.push_back(static_cast<int64_t>(d));
  }
  auto elements = CheckedNumElements(tensor.shape, "shape");
  if (!elements.ok()) return Invalid(source, name, elements.status().message());
  const Json& begin_json = (*offsets_it)[0];
  const Json& end_json = (*offsets_it)[1];
  if (!begin_json.is_number_unsigned() || !end_json.is_number_unsigned()) {
    return Invalid(source, name, "data_offsets are not sizes");
  }
  const uint64_t begin = begin_json.get<uint64_t>(), end = end_json.get<uint64_t>();
  if (begin > end || end > data.size()) {
    return Invalid(source, name, absl::StrCat("data_offsets [", begin, ", ", end, "] lie outside the ",
                                              data.size(), " data bytes of the file"));
  }
  const uint64_t element_size = DTypeSize(tensor.dtype);
  if (static_cast<uint64_t>(*elements) > (end - begin) / element_size ||
      static_cast<uint64_t>(*elements) * element_size != end - begin) {
    return Invalid(source, name, absl::StrCat("shape ", ShapeToString(tensor.shape), " of ", code,
                                              " does not match its ", end - begin, " data bytes"));
  }
  tensor.data.assign(data.begin() + begin, data.begin() + end);
  return std::make_pair(begin, std::move(tensor));
}

}  // namespace

absl::StatusOr<Model> ParseSafetensors(absl::Span<const uint8_t> bytes, absl::string_view source) {
  if (bytes.size() < 8) return Invalid(source, "", "too short to be a safetensors file");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_size > kMaxSafetensorsHeaderBytes || header_size > bytes.size() - 8) {
    return Invalid(source, "", absl::StrCat("header length ", header_size, " exceeds the ",
                                            bytes.size() - 8, " bytes after it"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  // Track keys of the top-level object to reject names that repeat (JSON parsers keep the last).
  absl::flat_hash_set<std::string> keys;
  std::string repeated;
  Json header = Json::parse(
      header_begin, header_begin + header_size,
      [&](int depth, Json::parse_event_t event, Json& parsed) {
        if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
          if (!keys.insert(parsed.get<std::string>()).second && repeated.empty()) repeated = parsed.get<std::string>();
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Invalid(source, "", "header is not a JSON object");
  if (!repeated.empty()) return Invalid(source, repeated, "name appears more than once");
  const absl::Span<const uint8_t> data = bytes.subspan(8 + header_size);
  std::vector<std::pair<uint64_t, Tensor>> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(auto entry, ParseEntry(it.key(), it.value(), data, source));
    entries.push_back(std::move(entry));
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  Model model;
  for (auto& [offset, tensor] : entries) model.tensors.push_back(std::move(tensor));
  return model;
}

absl::StatusOr<Model> ReadSafetensorsFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, ReadFileBytes(path));
  return ParseSafetensors(bytes, path);
}

std::vector<uint8_t> SerializeSafetensors(const Model& model) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();  // keys in tensor order
  uint64_t offset = 0;
  for (const Tensor& tensor : model.tensors) {
    auto code = std::find_if(std::begin(kDTypeCodes), std::end(kDTypeCodes),
                             [&](const auto& entry) { return entry.second == tensor.dtype; });
    header[tensor.name] = {{"dtype", std::string(code->first)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.data.size()}}};
    offset += tensor.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::vector<uint8_t> out;
  out.reserve(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i)));
  out.insert(out.end(), text.begin(), text.end());
  for (const Tensor& tensor : model.tensors) out.insert(out.end(), tensor.data.begin(), tensor.data.end());
  return out;
}

absl::Status WriteSafetensorsFile(const Model& model, const std::string& path) {
  return WriteFileAtomically(path, SerializeSafetensors(model));
}

}  // namespace weightcast
