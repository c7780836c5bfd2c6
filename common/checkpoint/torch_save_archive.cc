#include "common/checkpoint/torch_save_archive.h"

#include <array>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

constexpr uint64_t kAlignment = 64;  // as PyTorch's writer aligns record data
constexpr uint32_t kMax32 = std::numeric_limits<uint32_t>::max();
constexpr char kArchive[] = "archive/";

// Little-endian integers appended to a byte string.
void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
// A 32-bit zip field: the value, or 0xFFFFFFFF with the value in the ZIP64
// extra field.
uint32_t Field32(uint64_t v, bool zip64) {
  return zip64 ? kMax32 : static_cast<uint32_t>(v);
}

const char* StorageName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "FloatStorage";
    case DType::kFloat16:
      return "HalfStorage";
    case DType::kBFloat16:
      return "BFloat16Storage";
    case DType::kFloat64:
      return "DoubleStorage";
    case DType::kInt8:
      return "CharStorage";
    case DType::kUInt8:
      return "ByteStorage";
    case DType::kInt16:
      return "ShortStorage";
    case DType::kInt32:
      return "IntStorage";
    case DType::kInt64:
      return "LongStorage";
    case DType::kBool:
      return "BoolStorage";
  }
  return "FloatStorage";
}

// Protocol 2 pickle opcodes.
void PickleString(std::string& out, const std::string& s) {
  out.push_back('X');  // BINUNICODE
  Put32(out, static_cast<uint32_t>(s.size()));
  out += s;
}
void PickleGlobal(std::string& out, const char* module, const char* name) {
  absl::StrAppend(&out, "c", module, "\n", name, "\n");  // GLOBAL
}
void PickleInt(std::string& out, int64_t v) {
  if (v >= 0 && v < 256) {
    out.push_back('K');  // BININT1
    out.push_back(static_cast<char>(v));
  } else if (v >= 0 && v < 65536) {
    out.push_back('M');  // BININT2
    Put16(out, static_cast<uint16_t>(v));
  } else if (v >= std::numeric_limits<int32_t>::min() &&
             v <= std::numeric_limits<int32_t>::max()) {
    out.push_back('J');  // BININT
    Put32(out, static_cast<uint32_t>(v));
  } else {
    out += "\x8a\x08";  // LONG1, 8 bytes two's complement
    Put64(out, static_cast<uint64_t>(v));
  }
}
void PickleIntTuple(std::string& out, const std::vector<int64_t>& values) {
  if (values.empty()) {
    out.push_back(')');  // EMPTY_TUPLE
    return;
  }
  out.push_back('(');  // MARK
  for (int64_t v : values) PickleInt(out, v);
  out.push_back('t');  // TUPLE
}

// data.pkl: {name: torch._utils._rebuild_tensor_v2(storage, 0, shape, stride,
// False, OrderedDict())}, storage k a persistent id ('storage', <dtype's
// Storage>, 'k', 'cpu', elements), as torch.save writes a state dict.
std::string DataPickle(const std::vector<TensorLayout>& tensors) {
  std::string out = "\x80\x02}";  // PROTO 2, EMPTY_DICT
  out.push_back('(');             // MARK
  for (size_t k = 0; k < tensors.size(); ++k) {
    const TensorLayout& t = tensors[k];
    PickleString(out, t.name);
    PickleGlobal(out, "torch._utils", "_rebuild_tensor_v2");
    out.push_back('(');  // MARK: the arguments
    out.push_back('(');  // MARK: the persistent id
    PickleString(out, "storage");
    PickleGlobal(out, "torch", StorageName(t.dtype));
    PickleString(out, std::to_string(k));
    PickleString(out, "cpu");
    PickleInt(out, static_cast<int64_t>(t.bytes / DTypeSize(t.dtype)));
    out += "tQ";  // TUPLE, BINPERSID
    PickleInt(out, 0);
    PickleIntTuple(out, t.shape);
    std::vector<int64_t> stride(t.shape.size(), 1);
    for (size_t i = t.shape.size(); i-- > 1;)
      stride[i - 1] = stride[i] * t.shape[i];
    PickleIntTuple(out, stride);
    out.push_back('\x89');  // NEWFALSE: requires_grad
    PickleGlobal(out, "collections", "OrderedDict");
    out += ")R";  // EMPTY_TUPLE, REDUCE: backward hooks
    out += "tR";  // TUPLE, REDUCE
  }
  out += "u.";  // SETITEMS, STOP
  return out;
}

const std::array<uint32_t, 256>& CrcTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

}  // namespace

uint32_t Crc32(uint32_t crc, const uint8_t* data, size_t size) {
  const std::array<uint32_t, 256>& table = CrcTable();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i)
    crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

absl::StatusOr<TorchSaveArchive> TorchSaveArchive::Create(
    const std::vector<TensorLayout>& tensors, bool force_zip64) {
  for (const TensorLayout& t : tensors) {
    if (t.name.size() > 60000) {
      return absl::InvalidArgumentError(
          absl::StrCat("a tensor name of ", t.name.size(),
                       " bytes is too long for a .pt record"));
    }
    RETURN_IF_ERROR(CheckTensorLayout(t));
  }
  TorchSaveArchive archive;
  const std::string pickle = DataPickle(tensors);
  const std::string version = "3\n";
  uint64_t total = pickle.size() + version.size();
  for (const TensorLayout& t : tensors) total += t.bytes;
  // Headers add well under 4 GiB: past it in data, offsets may pass it too.
  archive.zip64_ =
      force_zip64 || total >= kMax32 || tensors.size() + 2 >= 0xffff;
  const std::vector<std::pair<std::string, uint64_t>> records = [&] {
    std::vector<std::pair<std::string, uint64_t>> r = {
        {"data.pkl", pickle.size()}, {"version", version.size()}};
    for (size_t k = 0; k < tensors.size(); ++k)
      r.emplace_back(absl::StrCat("data/", k), tensors[k].bytes);
    return r;
  }();
  uint64_t offset = 0;
  for (const auto& [record, bytes] : records) {
    Entry entry{absl::StrCat(kArchive, record), offset, 0, bytes};
    std::string header;
    Put32(header, 0x04034b50);
    Put16(header, archive.zip64_ ? 45 : 20);  // version needed
    Put16(header, 0);                         // flags
    Put16(header, 0);                         // stored
    Put16(header, 0);                         // time
    Put16(header, 0x21);                      // date: 1980-01-01
    Put32(header, 0);                         // CRC-32: Finish()
    Put32(header, Field32(bytes, archive.zip64_));
    Put32(header, Field32(bytes, archive.zip64_));
    Put16(header, static_cast<uint16_t>(entry.name.size()));
    std::string extra;
    if (archive.zip64_) {
      Put16(extra, 0x0001);
      Put16(extra, 16);
      Put64(extra, bytes);
      Put64(extra, bytes);
    }
    const uint64_t unpadded =
        offset + 30 + entry.name.size() + extra.size() + 4;
    const uint64_t pad = (kAlignment - unpadded % kAlignment) % kAlignment;
    Put16(extra, 0x4246);  // PyTorch's padding field ("FB")
    Put16(extra, static_cast<uint16_t>(pad));
    extra.append(pad, 'Z');
    Put16(header, static_cast<uint16_t>(extra.size()));
    header += entry.name;
    header += extra;
    entry.data = offset + header.size();
    archive.pieces_.push_back({offset, std::move(header)});
    offset = entry.data + bytes;
    archive.entries_.push_back(std::move(entry));
  }
  const auto crc_of = [](const std::string& s) {
    return Crc32(0, reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  archive.entries_[0].crc = crc_of(pickle);
  archive.entries_[1].crc = crc_of(version);
  archive.pieces_.push_back({archive.entries_[0].data, pickle});
  archive.pieces_.push_back({archive.entries_[1].data, version});
  archive.central_directory_ = offset;
  // The central directory and the end records come last; their size does
  // not depend on the CRCs.
  const FilePiece end =
      archive.Finish(std::vector<uint32_t>(tensors.size(), 0)).back();
  archive.size_ = end.offset + end.bytes.size();
  return archive;
}

std::vector<FilePiece> TorchSaveArchive::Finish(
    const std::vector<uint32_t>& tensor_crcs) const {
  std::vector<FilePiece> pieces;
  std::string directory;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    const uint32_t crc =
        i < kFirstTensor ? e.crc : tensor_crcs[i - kFirstTensor];
    std::string crc_bytes;
    Put32(crc_bytes, crc);
    pieces.push_back({e.header + 14, crc_bytes});  // the local header's CRC
    Put32(directory, 0x02014b50);
    Put16(directory, zip64_ ? 45 : 20);  // made by
    Put16(directory, zip64_ ? 45 : 20);  // needed
    Put16(directory, 0);
    Put16(directory, 0);
    Put16(directory, 0);
    Put16(directory, 0x21);
    Put32(directory, crc);
    Put32(directory, Field32(e.bytes, zip64_));
    Put32(directory, Field32(e.bytes, zip64_));
    Put16(directory, static_cast<uint16_t>(e.name.size()));
    Put16(directory, zip64_ ? 28 : 0);  // extra
    Put16(directory, 0);                // comment
    Put16(directory, 0);                // disk
    Put16(directory, 0);                // internal attributes
    Put32(directory, 0);                // external attributes
    Put32(directory, Field32(e.header, zip64_));
    directory += e.name;
    if (zip64_) {
      Put16(directory, 0x0001);
      Put16(directory, 24);
      Put64(directory, e.bytes);
      Put64(directory, e.bytes);
      Put64(directory, e.header);
    }
  }
  const uint64_t directory_bytes = directory.size();
  const uint64_t count = entries_.size();
  if (zip64_) {
    const uint64_t record = central_directory_ + directory_bytes;
    Put32(directory, 0x06064b50);  // ZIP64 end of central directory
    Put64(directory, 44);
    Put16(directory, 45);
    Put16(directory, 45);
    Put32(directory, 0);
    Put32(directory, 0);
    Put64(directory, count);
    Put64(directory, count);
    Put64(directory, directory_bytes);
    Put64(directory, central_directory_);
    Put32(directory, 0x07064b50);  // its locator
    Put32(directory, 0);
    Put64(directory, record);
    Put32(directory, 1);
  }
  Put32(directory, 0x06054b50);  // end of central directory
  Put16(directory, 0);
  Put16(directory, 0);
  Put16(directory, zip64_ ? 0xffff : static_cast<uint16_t>(count));
  Put16(directory, zip64_ ? 0xffff : static_cast<uint16_t>(count));
  Put32(directory, Field32(directory_bytes, zip64_));
  Put32(directory, Field32(central_directory_, zip64_));
  Put16(directory, 0);
  pieces.push_back({central_directory_, std::move(directory)});
  return pieces;
}

}  // namespace weightcast
