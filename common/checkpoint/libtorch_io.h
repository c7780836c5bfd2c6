// The libtorch wrapper: zip records of torch.save / torch.jit.save archives
// through libtorch's PyTorchStreamReader, TorchScript modules' parameters and
// buffers (.pt outputs are written without libtorch: torch_save_archive.h).
// One of the two files that include libtorch headers (the
// other, common/eval/evaluator.cc, runs TorchScript modules; scripts/check
// holds this); everything libtorch throws (c10::Error, and the TorchScript
// compiler's ErrorReport and std::runtime_error on damaged code/ sources) is
// caught here and returned as a status naming the file. Thread-safe: calls
// share no state (a RecordReader itself is for one thread at a time).
#ifndef WEIGHTCAST_COMMON_CHECKPOINT_LIBTORCH_IO_H_
#define WEIGHTCAST_COMMON_CHECKPOINT_LIBTORCH_IO_H_

#include <exception>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/checkpoint/torch_checkpoint.h"
#include "common/tensor/tensor.h"

namespace weightcast {

// The first non-empty line of what libtorch threw: the rest is a C++ backtrace
// (c10::Error) or the TorchScript source around the fault (the compiler's
// ErrorReport and runtime_error, whose text may start with a newline). For the
// other libtorch file (common/eval/evaluator.cc) too.
std::string BriefLibtorchError(const std::exception& e);

// INVALID_ARGUMENT naming the file when it is not a readable zip archive.
absl::StatusOr<std::unique_ptr<RecordReader>> OpenTorchArchive(
    const std::string& path);

// Run before handing an untrusted archive to torch::jit::load. libtorch's
// TorchScript loader sizes each storage by the element count its pickle
// declares and never compares that with the record it reads (a record cut short
// is read, and written, past its end), and its unpickler allocates whatever
// length a string claims. INVALID_ARGUMENT naming the record unless every
// storage data.pkl and constants.pkl declare fits in its record and every
// pickle (with the code/ .debug_pkl source ranges) passes our bounded reader
// (pickle.h).
absl::Status CheckTorchScriptArchive(const std::string& path);

// Parameters and buffers of a TorchScript module (torch.jit.save), named as in
// its state_dict. INVALID_ARGUMENT naming the file for an archive libtorch
// cannot load (damaged code/ sources, pickles or records).
absl::StatusOr<Model> ReadTorchScriptModule(const std::string& path);

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_CHECKPOINT_LIBTORCH_IO_H_
