// libFuzzer target: the torch.save reader (pickle VM, state_dict discovery,
// view checks) on an arbitrary data.pkl. Storage records ("data/N") all hold
// the same 4 KiB, so views that reach past them must be refused, not read.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/checkpoint/torch_checkpoint.h"

namespace {

class FuzzRecords : public weightcast::RecordReader {
 public:
  FuzzRecords(const uint8_t* data, size_t size) : pickle_(data, data + size) {}
  bool HasRecord(const std::string& name) override {
    return name == "data.pkl" || name.rfind("data/", 0) == 0;
  }
  absl::StatusOr<std::vector<uint8_t>> ReadRecord(
      const std::string& name) override {
    if (name == "data.pkl") return pickle_;
    if (name.rfind("data/", 0) == 0) return std::vector<uint8_t>(4096, 0x3f);
    return absl::NotFoundError(name);
  }

 private:
  const std::vector<uint8_t> pickle_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzRecords records(data, size);
  (void)weightcast::ReadTorchSave(records, "fuzz");
  return 0;
}
