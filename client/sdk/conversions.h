// Conversions between the API's protobuf messages and the SDK's public structs
// (client.h). Internal to client/sdk. Stateless; thread-safe.
#ifndef WEIGHTCAST_CLIENT_SDK_CONVERSIONS_H_
#define WEIGHTCAST_CLIENT_SDK_CONVERSIONS_H_

#include "client/sdk/client.h"
#include "weightcast/v1/weightcast.pb.h"

namespace weightcast {

// A described version: its tensors' float weight count, tiers, layers and
// accuracy figures.
ModelInfo FromProto(const v1::ModelVersion& v);

}  // namespace weightcast

#endif  // WEIGHTCAST_CLIENT_SDK_CONVERSIONS_H_
