// libFuzzer target: arbitrary bytes as a file through the TorchScript loading
// paths weightcast runs on untrusted files: ReadCheckpoint (weightcast-pack and
// the server's registration: zip sniffing, CheckTorchScriptArchive,
// torch::jit::load, parameter walk) and, for a zip it takes for TorchScript,
// Evaluator::Load (the server's evaluation module). Each must return a status,
// never throw, crash or read out of bounds. libtorch itself is not
// instrumented: ASan sees only what crosses into our code and the allocations
// it makes through malloc. Seeds: make_torchscript_seeds.py.
//
// Known, not ours to fix: Debian 12's libtorch 1.13 crashes inside its
// TorchScript frontend on some damaged code/ sources, e.g. a class-level `name
// = value` without a type annotation (one mutated letter of `__parameters__`)
// makes ScriptTypeParser::parseClassConstant read an unset tree (SEGV under
// ASan; in Release it happened to throw). Upstream fixed crashes of this kind
// after 1.13 (e.g. pytorch/pytorch#108417) and treats torch::jit::load input as
// trusted code.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/checkpoint/checkpoint.h"
#include "common/eval/evaluator.h"

namespace {

// The readers take a path: the input goes into one in-memory file, named by
// /proc/self/fd.
class InputFile {
 public:
  InputFile()
      : fd_(memfd_create("fuzz_torchscript", 0)),
        path_("/proc/self/fd/" + std::to_string(fd_)) {
    if (fd_ < 0) std::abort();
  }
  const std::string& Write(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0) std::abort();
    for (size_t done = 0; done < size;) {
      const ssize_t n =
          pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  const int fd_;
  const std::string path_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static InputFile* const file = new InputFile();
  const std::string& path = file->Write(data, size);
  weightcast::CheckpointFormat format =
      weightcast::CheckpointFormat::kSafetensors;  // set once recognized
  (void)weightcast::ReadCheckpoint(path, &format);
  if (format == weightcast::CheckpointFormat::kTorchScript) {
    // The evaluator loads and checks the module before it looks for the
    // (absent) data file.
    (void)weightcast::Evaluator::Load(path, "/nonexistent/eval_data.pt");
  }
  return 0;
}
