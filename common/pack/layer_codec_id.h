// The codecs a packed layer can be coded with: the domain's one enum, on its
// own so that code that only records which codec a layer has (the registry)
// does not depend on the packer. Names and the API's numbers are in
// packed_layer.h; the registry's stored numbers in server/storage/registry.cc.
#ifndef WEIGHTCAST_COMMON_PACK_LAYER_CODEC_ID_H_
#define WEIGHTCAST_COMMON_PACK_LAYER_CODEC_ID_H_

namespace weightcast {

enum class LayerCodec {
  kHevc,
  kRawInt8,
  kZstdInt8,
  kFloat32,
  kFloat16,
  kPassthrough,
  kHevcDelta
};

}  // namespace weightcast

#endif  // WEIGHTCAST_COMMON_PACK_LAYER_CODEC_ID_H_
