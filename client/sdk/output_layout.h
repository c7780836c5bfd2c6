// The layout of a streamed output, computed before any layer arrives: the
// manifest's layers in tensor order, each as the tensors WriteCheckpoint writes
// for it (checkpoint.h's rule for `kind`): for kFloat the shape the version
// describes and the dtype its codec decodes to as float; for kInt8 the int8
// values, their "<name>.__scale__" (and "__zero_point__") as the manifest's
// quantization scheme sizes them, and other layers as stored. Internal to
// client/sdk. Pure; thread-safe.
#ifndef WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_
#define WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "client/sdk/client.h"
#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/safetensors.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

// FAILED_PRECONDITION when the layout cannot be known in advance (a layer the
// description does not name at its index, an unknown codec or dtype, an int8
// layer without its scheme from a server older than the field): the caller
// writes the whole model at the end instead. The server's numbers are checked
// (tensor indices in range, element counts without overflow);
// CheckpointStreamWriter checks every decoded tensor against the layout.
absl::StatusOr<std::vector<TensorLayout>> OutputLayout(
    const v1::Manifest& manifest, const ModelInfo& info, OutputKind kind);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_
