#include "common/checkpoint/pickle.h"

#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace weightcast {
namespace {

using Kind = PickleValue::Kind;

constexpr std::pair<absl::string_view, DType> kStorageTypes[] = {
    {"torch.FloatStorage", DType::kFloat32},
    {"torch.HalfStorage", DType::kFloat16},
    {"torch.BFloat16Storage", DType::kBFloat16},
    {"torch.DoubleStorage", DType::kFloat64},
    {"torch.CharStorage", DType::kInt8},
    {"torch.ByteStorage", DType::kUInt8},
    {"torch.ShortStorage", DType::kInt16},
    {"torch.IntStorage", DType::kInt32},
    {"torch.LongStorage", DType::kInt64},
    {"torch.BoolStorage", DType::kBool},
};

// The pickle virtual machine: a stack with marks, and a memo.
class Machine {
 public:
  Machine(absl::Span<const uint8_t> bytes, absl::string_view source)
      : in_(bytes), source_(source) {}

  absl::StatusOr<PickleRef> Run();
  std::vector<std::unique_ptr<PickleValue>> TakeValues() {
    return std::move(values_);
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: pickle at byte %d: %s", source_, op_pos_, what));
  }
  absl::StatusOr<absl::Span<const uint8_t>> Take(uint64_t n) {
    if (n > in_.size() - pos_) return Error("truncated");
    auto span = in_.subspan(pos_, n);
    pos_ += n;
    return span;
  }
  absl::StatusOr<uint64_t> Uint(int bytes) {
    ASSIGN_OR_RETURN(auto span, Take(bytes));
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i)
      v |= static_cast<uint64_t>(span[i]) << (8 * i);
    return v;
  }
  absl::StatusOr<std::string> Line() {
    for (size_t end = pos_; end < in_.size(); ++end) {
      if (in_[end] == '\n') {
        std::string line(reinterpret_cast<const char*>(in_.data() + pos_),
                         end - pos_);
        pos_ = end + 1;
        return line;
      }
    }
    return Error("truncated line");
  }
  absl::Status Push(PickleRef value) {
    if (stack_.size() >= kMaxPickleStackDepth) return Error("stack too deep");
    stack_.push_back(std::move(value));
    return absl::OkStatus();
  }
  absl::StatusOr<PickleRef> Pop() {
    if (stack_.size() <= Floor()) return Error("stack underflow");
    PickleRef v = stack_.back();
    stack_.pop_back();
    return v;
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<std::vector<PickleRef>> PopToMark() {
    if (marks_.empty()) return Error("no mark");
    std::vector<PickleRef> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  absl::StatusOr<PickleRef> Top() {
    if (stack_.size() <= Floor()) return Error("stack underflow");
    return stack_.back();
  }
  absl::Status Memoize(uint64_t index) {
    ASSIGN_OR_RETURN(PickleRef top, Top());
    if (index >= kMaxPickleMemo) return Error("memo index too large");
    memo_[index] = top;
    return absl::OkStatus();
  }
  absl::Status Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end())
      return Error(absl::StrCat("memo ", index, " was never stored"));
    return Push(it->second);
  }
  PickleRef Make(Kind kind) {
    values_.push_back(std::make_unique<PickleValue>());
    values_.back()->kind = kind;
    return values_.back().get();
  }
  PickleRef String(Kind kind, absl::Span<const uint8_t> bytes) {
    PickleRef v = Make(kind);
    v->text.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return v;
  }
  absl::Status PushString(Kind kind, int length_bytes) {
    ASSIGN_OR_RETURN(uint64_t n, Uint(length_bytes));
    ASSIGN_OR_RETURN(auto bytes, Take(n));
    return Push(String(kind, bytes));
  }
  absl::Status PushTuple(size_t n) {
    if (stack_.size() < Floor() + n) return Error("stack underflow");
    PickleRef tuple = Make(Kind::kTuple);
    tuple->items.assign(stack_.end() - n, stack_.end());
    stack_.resize(stack_.size() - n);
    return Push(std::move(tuple));
  }
  absl::Status AddItems(std::vector<PickleRef> items, bool pairs);
  absl::StatusOr<PickleRef> Call(const PickleRef& callable,
                                 const PickleRef& args);
  absl::StatusOr<PickleRef> PersistentLoad(const PickleRef& pid);
  absl::StatusOr<PickleRef> RebuildTensor(const std::vector<PickleRef>& args);

  absl::Span<const uint8_t> in_;
  std::string source_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<PickleRef> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, PickleRef> memo_;
  std::vector<std::unique_ptr<PickleValue>> values_;  // owns every value
};

absl::Status Machine::AddItems(std::vector<PickleRef> items, bool pairs) {
  ASSIGN_OR_RETURN(PickleRef target, Top());
  if (pairs) {
    if (target->kind != Kind::kDict)
      return Error(absl::StrCat("SETITEMS on ", target->Describe()));
    if (items.size() % 2) return Error("odd number of dict items");
  } else if (target->kind != Kind::kList) {
    return Error(absl::StrCat("APPENDS on ", target->Describe()));
  }
  if (target->items.size() + items.size() > kMaxPickleMemo * 16)
    return Error("container too large");
  for (PickleRef& item : items) target->items.push_back(std::move(item));
  return absl::OkStatus();
}

absl::StatusOr<PickleRef> Machine::PersistentLoad(const PickleRef& pid) {
  // ('storage', storage_type, key, location, numel)
  if (pid->kind != Kind::kTuple || pid->items.size() != 5 ||
      pid->items[0]->kind != Kind::kString ||
      pid->items[0]->text != "storage" ||
      pid->items[1]->kind != Kind::kGlobal ||
      pid->items[2]->kind != Kind::kString ||
      pid->items[4]->kind != Kind::kInt) {
    return Error("persistent id is not a torch storage");
  }
  PickleRef storage = Make(Kind::kStorage);
  bool known = false;
  for (const auto& [name, dtype] : kStorageTypes) {
    if (pid->items[1]->text == name) {
      storage->tensor.dtype = dtype;
      known = true;
    }
  }
  if (!known)
    return Error(
        absl::StrCat("unsupported storage type ", pid->items[1]->text));
  storage->tensor.storage_key = pid->items[2]->text;
  storage->tensor.storage_numel = pid->items[4]->integer;
  if (storage->tensor.storage_numel < 0) return Error("negative storage size");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(
          static_cast<uint64_t>(storage->tensor.storage_numel),
          DTypeSize(storage->tensor.dtype), &bytes)) {
    return Error(absl::StrCat("storage ", storage->tensor.storage_key, " of ",
                              storage->tensor.storage_numel,
                              " elements overflows 64 bits of bytes"));
  }
  return storage;
}

absl::StatusOr<PickleRef> Machine::RebuildTensor(
    const std::vector<PickleRef>& args) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  // backward_hooks[, metadata])
  if (args.size() < 4 || args[0]->kind != Kind::kStorage ||
      args[1]->kind != Kind::kInt || args[2]->kind != Kind::kTuple ||
      args[3]->kind != Kind::kTuple ||
      args[2]->items.size() != args[3]->items.size() ||
      args[2]->items.size() > 8) {
    return Error("malformed _rebuild_tensor_v2 arguments");
  }
  PickleRef tensor = Make(Kind::kTensor);
  tensor->tensor = args[0]->tensor;
  tensor->tensor.offset = args[1]->integer;
  for (size_t i = 0; i < args[2]->items.size(); ++i) {
    if (args[2]->items[i]->kind != Kind::kInt ||
        args[3]->items[i]->kind != Kind::kInt) {
      return Error("tensor size or stride is not an integer");
    }
    tensor->tensor.shape.push_back(args[2]->items[i]->integer);
    tensor->tensor.strides.push_back(args[3]->items[i]->integer);
  }
  return tensor;
}

absl::StatusOr<PickleRef> Machine::Call(const PickleRef& callable,
                                        const PickleRef& args) {
  if (callable->kind != Kind::kGlobal)
    return Error(absl::StrCat("cannot call a ", callable->Describe()));
  if (args->kind != Kind::kTuple)
    return Error("call arguments are not a tuple");
  const std::string& name = callable->text;
  if (name == "collections.OrderedDict" || name == "builtins.dict")
    return Make(Kind::kDict);
  if (name == "torch._utils._rebuild_tensor_v2")
    return RebuildTensor(args->items);
  if (name ==
      "torch.jit._pickle.restore_type_tag") {  // (value, "Dict[str, Tensor]")
                                               // from libtorch
    if (args->items.empty()) return Error("malformed restore_type_tag");
    return args->items[0];
  }
  if (name == "torch._utils._rebuild_parameter" ||
      name == "torch._utils._rebuild_parameter_with_state") {
    if (args->items.empty() || args->items[0]->kind != Kind::kTensor)
      return Error("malformed parameter");
    return args->items[0];
  }
  if (name == "torch._utils._rebuild_qtensor" ||
      name == "torch._utils._rebuild_sparse_tensor" ||
      name == "torch._utils._rebuild_meta_tensor_no_storage") {
    return Error(absl::StrCat(
        name, ": quantized, sparse and meta tensors are not supported"));
  }
  // Anything else is recorded, never run.
  PickleRef object = Make(Kind::kObject);
  object->text = name;
  return object;
}

absl::StatusOr<PickleRef> Machine::Run() {
  while (true) {
    op_pos_ = pos_;
    ASSIGN_OR_RETURN(auto op_span, Take(1));
    const uint8_t op = op_span[0];
    switch (op) {
      case 0x80:
        RETURN_IF_ERROR(Take(1).status());
        break;  // PROTO
      case 0x95:
        RETURN_IF_ERROR(Take(8).status());
        break;     // FRAME
      case '.': {  // STOP
        ASSIGN_OR_RETURN(PickleRef result, Pop());
        return result;
      }
      case '(':  // MARK
        if (marks_.size() >= kMaxPickleStackDepth)
          return Error("too many marks");
        marks_.push_back(stack_.size());
        break;
      case '0':
        RETURN_IF_ERROR(Pop().status());
        break;  // POP
      case '1':
        RETURN_IF_ERROR(PopToMark().status());
        break;     // POP_MARK
      case '2': {  // DUP
        ASSIGN_OR_RETURN(PickleRef top, Top());
        RETURN_IF_ERROR(Push(top));
        break;
      }
      case 'N':
        RETURN_IF_ERROR(Push(Make(Kind::kNone)));
        break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PickleRef v = Make(Kind::kBool);
        v->boolean = op == 0x88;
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'J':
      case 'K':
      case 'M': {  // BININT (4, signed), BININT1, BININT2
        const int n = op == 'J' ? 4 : op == 'K' ? 1 : 2;
        ASSIGN_OR_RETURN(uint64_t raw, Uint(n));
        PickleRef v = Make(Kind::kInt);
        v->integer =
            op == 'J' ? static_cast<int32_t>(raw) : static_cast<int64_t>(raw);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 0x8a: {  // LONG1: n-byte little-endian two's complement
        ASSIGN_OR_RETURN(uint64_t n, Uint(1));
        if (n > 8) return Error("integer wider than 64 bits");
        ASSIGN_OR_RETURN(uint64_t raw, Uint(static_cast<int>(n)));
        if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1)
          raw |= ~uint64_t{0} << (8 * n);  // sign-extend
        PickleRef v = Make(Kind::kInt);
        v->integer = static_cast<int64_t>(raw);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        ASSIGN_OR_RETURN(auto bytes, Take(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | bytes[i];
        PickleRef v = Make(Kind::kFloat);
        std::memcpy(&v->real, &bits, 8);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'X':
        RETURN_IF_ERROR(PushString(Kind::kString, 4));
        break;  // BINUNICODE
      case 0x8c:
        RETURN_IF_ERROR(PushString(Kind::kString, 1));
        break;  // SHORT_BINUNICODE
      case 0x8d:
        RETURN_IF_ERROR(PushString(Kind::kString, 8));
        break;  // BINUNICODE8
      case 'T':
        RETURN_IF_ERROR(PushString(Kind::kString, 4));
        break;  // BINSTRING
      case 'U':
        RETURN_IF_ERROR(PushString(Kind::kString, 1));
        break;  // SHORT_BINSTRING
      case 'B':
        RETURN_IF_ERROR(PushString(Kind::kBytes, 4));
        break;  // BINBYTES
      case 'C':
        RETURN_IF_ERROR(PushString(Kind::kBytes, 1));
        break;  // SHORT_BINBYTES
      case ')':
        RETURN_IF_ERROR(Push(Make(Kind::kTuple)));
        break;
      case ']':
        RETURN_IF_ERROR(Push(Make(Kind::kList)));
        break;
      case '}':
        RETURN_IF_ERROR(Push(Make(Kind::kDict)));
        break;
      case 0x85:
        RETURN_IF_ERROR(PushTuple(1));
        break;
      case 0x86:
        RETURN_IF_ERROR(PushTuple(2));
        break;
      case 0x87:
        RETURN_IF_ERROR(PushTuple(3));
        break;
      case 't':
      case 'l':
      case 'd': {  // TUPLE, LIST, DICT from the mark
        ASSIGN_OR_RETURN(std::vector<PickleRef> items, PopToMark());
        if (op == 'd' && items.size() % 2)
          return Error("odd number of dict items");
        PickleRef v = Make(op == 't'   ? Kind::kTuple
                           : op == 'l' ? Kind::kList
                                       : Kind::kDict);
        v->items = std::move(items);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'a': {  // APPEND
        ASSIGN_OR_RETURN(PickleRef item, Pop());
        RETURN_IF_ERROR(AddItems({item}, false));
        break;
      }
      case 'e': {  // APPENDS
        ASSIGN_OR_RETURN(std::vector<PickleRef> items, PopToMark());
        RETURN_IF_ERROR(AddItems(std::move(items), false));
        break;
      }
      case 's': {  // SETITEM
        ASSIGN_OR_RETURN(PickleRef value, Pop());
        ASSIGN_OR_RETURN(PickleRef key, Pop());
        RETURN_IF_ERROR(AddItems({key, value}, true));
        break;
      }
      case 'u': {  // SETITEMS
        ASSIGN_OR_RETURN(std::vector<PickleRef> items, PopToMark());
        RETURN_IF_ERROR(AddItems(std::move(items), true));
        break;
      }
      case 'q': {
        ASSIGN_OR_RETURN(uint64_t i, Uint(1));
        RETURN_IF_ERROR(Memoize(i));
        break;
      }  // BINPUT
      case 'r': {
        ASSIGN_OR_RETURN(uint64_t i, Uint(4));
        RETURN_IF_ERROR(Memoize(i));
        break;
      }  // LONG_BINPUT
      case 0x94:
        RETURN_IF_ERROR(Memoize(memo_.size()));
        break;  // MEMOIZE
      case 'h': {
        ASSIGN_OR_RETURN(uint64_t i, Uint(1));
        RETURN_IF_ERROR(Recall(i));
        break;
      }  // BINGET
      case 'j': {
        ASSIGN_OR_RETURN(uint64_t i, Uint(4));
        RETURN_IF_ERROR(Recall(i));
        break;
      }            // LONG_BINGET
      case 'c': {  // GLOBAL "module\nname\n"
        ASSIGN_OR_RETURN(std::string module, Line());
        ASSIGN_OR_RETURN(std::string name, Line());
        PickleRef v = Make(Kind::kGlobal);
        v->text = absl::StrCat(module, ".", name);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        ASSIGN_OR_RETURN(PickleRef name, Pop());
        ASSIGN_OR_RETURN(PickleRef module, Pop());
        if (name->kind != Kind::kString || module->kind != Kind::kString)
          return Error("STACK_GLOBAL needs strings");
        PickleRef v = Make(Kind::kGlobal);
        v->text = absl::StrCat(module->text, ".", name->text);
        RETURN_IF_ERROR(Push(v));
        break;
      }
      case 'R':
      case 0x81: {  // REDUCE, NEWOBJ
        ASSIGN_OR_RETURN(PickleRef args, Pop());
        ASSIGN_OR_RETURN(PickleRef callable, Pop());
        ASSIGN_OR_RETURN(PickleRef result, Call(callable, args));
        RETURN_IF_ERROR(Push(result));
        break;
      }
      case 'b': {  // BUILD: set state on an object; the state of dicts and
                   // objects is not needed
        RETURN_IF_ERROR(Pop().status());
        RETURN_IF_ERROR(Top().status());
        break;
      }
      case 'Q': {  // BINPERSID
        ASSIGN_OR_RETURN(PickleRef pid, Pop());
        ASSIGN_OR_RETURN(PickleRef storage, PersistentLoad(pid));
        RETURN_IF_ERROR(Push(storage));
        break;
      }
      default:
        return Error(absl::StrFormat("unsupported opcode 0x%02x", op));
    }
  }
}

}  // namespace

std::string PickleValue::Describe() const {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return absl::StrCat("global ", text);
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
    case Kind::kObject:
      return absl::StrCat("object ", text);
  }
  return "unknown";
}

absl::StatusOr<PickleDocument> ReadPickle(absl::Span<const uint8_t> bytes,
                                          absl::string_view source) {
  Machine machine(bytes, source);
  absl::StatusOr<PickleRef> root = machine.Run();
  if (!root.ok()) return root.status();
  return PickleDocument{machine.TakeValues(), *root};
}

}  // namespace weightcast
