// The layout of a streamed float safetensors output, computed before any layer
// arrives: the manifest's layers in tensor order, each with the shape and dtype
// the version describes and the dtype its codec decodes to as float output
// (checkpoint.h's kFloat rule). Internal to client/sdk. Pure; thread-safe.
#ifndef WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_
#define WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "client/sdk/client.h"
#include "common/checkpoint/safetensors.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

// FAILED_PRECONDITION when the layout cannot be known in advance (a layer the
// description does not name at its index, an unknown codec or dtype): the
// caller writes the whole model at the end instead. The server's numbers are
// checked (tensor indices in range, element counts without overflow);
// CheckpointStreamWriter checks every decoded tensor against the layout.
absl::StatusOr<std::vector<TensorLayout>> FloatOutputLayout(
    const v1::Manifest& manifest, const ModelInfo& info);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_OUTPUT_LAYOUT_H_
