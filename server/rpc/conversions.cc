#include "server/rpc/conversions.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/base/printable.h"
#include "common/base/sha256.h"
#include "common/pack/layer_policy.h"
#include "common/pack/packed_layer.h"

namespace weightcast {

std::string ClientMessage(absl::string_view message) {
  std::string out;
  bool withheld = false;
  const size_t newline = message.find('\n');
  if (newline !=
      absl::string_view::npos) {  // a library's backtrace, a multi-line dump
    message = message.substr(0, newline);
    withheld = true;
  }
  for (size_t i = 0; i < message.size();) {
    static constexpr absl::string_view kBefore = " '\"(=:";
    const bool starts_word =
        i == 0 || kBefore.find(message[i - 1]) != absl::string_view::npos;
    if (message[i] == '/' && i > 0 && message[i - 1] == ':' &&
        message.substr(i, 2) == "//") {
      // A URL ("postgresql://user:***@host:5432/db", already redacted by
      // whoever wrote it), not a server path: its words pass.
      const size_t end =
          std::min(message.find_first_of(" '\"", i), message.size());
      for (; i < end; ++i) {
        const unsigned char c = static_cast<unsigned char>(message[i]);
        out += c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c);
      }
      continue;
    }
    if (message[i] == '/' && starts_word) {
      const size_t end =
          std::min(message.find_first_of(" '\"):,", i), message.size());
      if (message.substr(i + 1, end - i - 1).find('/') !=
          absl::string_view::npos) {
        out += "<server path>";
        withheld = true;
        i = end;
        continue;
      }
    }
    const unsigned char c = static_cast<unsigned char>(message[i++]);
    out += c < 0x20 || c == 0x7f ? '?' : static_cast<char>(c);
  }
  if (out.size() > kMaxClientMessageBytes) {
    const size_t total = out.size();
    out.resize(kMaxClientMessageBytes);
    absl::StrAppend(&out, "... (", total, " bytes)");
  }
  if (withheld) absl::StrAppend(&out, " (details in the server log)");
  return out;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message = ClientMessage(status.message());
  if (message.size() != status.message().size() ||
      message != status.message()) {
    std::fprintf(stderr, "weightcastd: answered %s: %s\n",
                 absl::StatusCodeToString(status.code()).c_str(),
                 Printable(status.message().substr(0, 64 << 10)).c_str());
  }
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(
      static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
      std::move(message));
}

v1::Assignment::Reason ToProto(AssignmentReason reason) {
  switch (reason) {
    case AssignmentReason::kRollout:
      return v1::Assignment::ROLLOUT;
    case AssignmentReason::kBaseline:
      return v1::Assignment::BASELINE;
    case AssignmentReason::kRollback:
      return v1::Assignment::ROLLBACK;
  }
  return v1::Assignment::REASON_UNSPECIFIED;
}

v1::LayerCodec ToProto(LayerCodec codec) {
  return static_cast<v1::LayerCodec>(LayerCodecProtoNumber(codec));
}

namespace {

// An int8 layer's recorded scheme, "<scheme>[+outliers][+cols][+mosaic]"
// (model_store_encoding.cc); UNSPECIFIED for other layers.
v1::QuantScheme SchemeOf(const LayerRecord& layer) {
  absl::string_view name = layer.quant_scheme;
  absl::ConsumeSuffix(&name, "+mosaic");
  absl::ConsumeSuffix(&name, "+cols");
  absl::ConsumeSuffix(&name, "+outliers");
  absl::StatusOr<QuantScheme> scheme = QuantSchemeFromName(name);
  return scheme.ok()
             ? static_cast<v1::QuantScheme>(QuantSchemeProtoNumber(*scheme))
             : v1::QUANT_SCHEME_UNSPECIFIED;
}

bool HasColumnScales(const LayerRecord& layer) {
  return absl::StrContains(layer.quant_scheme, "+cols");
}

void ToProto(const Accuracy& accuracy, v1::Accuracy* out) {
  out->set_top1(accuracy.top1);
  out->set_top2(accuracy.top2);
  out->set_examples(static_cast<uint64_t>(accuracy.examples));
  if (accuracy.output_cosine) out->set_output_cosine(*accuracy.output_cosine);
  out->set_unlabelled(!accuracy.labelled);
}

}  // namespace

absl::StatusOr<absl::flat_hash_set<std::string>> HeldBlobs(
    const google::protobuf::RepeatedPtrField<std::string>& raw) {
  if (raw.size() > kMaxHeldBlobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("held_blob_sha256 lists ", raw.size(), " blobs; at most ",
                     kMaxHeldBlobs));
  }
  absl::flat_hash_set<std::string> held;
  for (const std::string& sha : raw) {
    if (sha.size() != 32)
      return absl::InvalidArgumentError(
          "held_blob_sha256: every entry must be a 32-byte SHA-256");
    Sha256Digest digest;
    std::copy(sha.begin(), sha.end(), digest.begin());
    held.insert(DigestToHex(digest));
  }
  return held;
}

void ToProto(const VersionRecord& version, const std::vector<TierRecord>& tiers,
             v1::ModelVersion* out) {
  out->set_model(version.model);
  out->set_version(version.version);
  out->set_description(version.description);
  out->set_source_sha256(version.source_sha256);
  out->set_source_bytes(version.source_bytes);
  out->set_created_unix_seconds(version.created_unix_seconds);
  out->set_has_eval_bundle(version.has_eval_bundle());
  out->set_base_version(version.base_version);
  if (version.reference_accuracy)
    ToProto(*version.reference_accuracy, out->mutable_reference_accuracy());
  auto policy = ParseLayerPolicy(version.policy_json);
  if (policy.ok()) out->set_layer_policy(DescribeLayerPolicy(*policy));
  int64_t weights = 0;
  for (const TensorRecord& t : version.tensors) {
    v1::TensorInfo* info = out->add_tensors();
    info->set_name(t.name);
    for (int64_t d : t.shape) info->add_shape(d);
    info->set_dtype(t.dtype);
    info->set_layer_class(t.layer_class);
    if (t.dtype.rfind("float", 0) == 0 || t.dtype == "bfloat16") {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      weights += n;
    }
  }
  for (const TierRecord& tier : tiers) {
    v1::TierInfo* info = out->add_tiers();
    info->set_name(tier.tier);
    info->set_state(
        static_cast<v1::TierInfo::State>(static_cast<int>(tier.state) + 1));
    info->set_error(tier.error);
    if (tier.accuracy) ToProto(*tier.accuracy, info->mutable_accuracy());
    double worst = std::numeric_limits<double>::infinity();
    double worst_layer = std::numeric_limits<double>::infinity();
    uint64_t bytes = 0;
    for (const LayerRecord& layer : tier.layers) {
      v1::LayerStats* stats = info->add_layers();
      stats->set_name(layer.name);
      stats->set_codec(ToProto(layer.codec));
      stats->set_bytes(layer.bytes);
      stats->set_bits_per_weight(layer.bits_per_weight);
      stats->set_sqnr_db(layer.sqnr_db);
      stats->set_decoded_sha256(layer.decoded_sha256);
      stats->set_qp(layer.qp);
      stats->set_quant_scheme(SchemeOf(layer));
      stats->set_outliers(absl::StrContains(layer.quant_scheme, "+outliers"));
      stats->set_column_scales(HasColumnScales(layer));
      stats->set_mosaic(absl::EndsWith(layer.quant_scheme, "+mosaic"));
      bytes += layer.bytes;
      if (layer.picture) worst = std::min(worst, layer.sqnr_db);
      if (layer.sqnr_db < worst_layer) {
        worst_layer = layer.sqnr_db;
        info->set_worst_layer(layer.name);
      }
    }
    info->set_bytes(bytes);
    info->set_bits_per_weight(weights ? 8.0 * bytes / weights : 0);
    info->set_worst_sqnr_db(worst);
    if (tier.state == TierState::kReady)
      info->set_worst_layer_sqnr_db(worst_layer);
  }
}

void ToProto(const Manifest& manifest, v1::Manifest* out) {
  out->set_model(manifest.version.model);
  out->set_version(manifest.version.version);
  out->set_tier(manifest.tier);
  out->set_total_bytes(manifest.total_bytes);
  for (const LayerRecord& layer : manifest.layers) {
    v1::ManifestLayer* l = out->add_layers();
    l->set_name(layer.name);
    l->set_bytes(layer.bytes);
    // blob names are hex SHA-256; the manifest carries raw digests
    l->set_blob_sha256(HexToRawDigest(layer.blob_sha256));
    l->set_decoded_sha256(layer.decoded_sha256);
    l->set_codec(ToProto(layer.codec));
    if (!layer.base_blob_sha256.empty())
      l->set_base_blob_sha256(HexToRawDigest(layer.base_blob_sha256));
    l->set_is_base(layer.is_base);
    l->set_tensor_index(layer.tensor_index);
    // A layer with column scales is written per channel as int8
    // (RebuiltTensor::Int8Output): the layout a client plans.
    l->set_quant_scheme(HasColumnScales(layer)
                            ? v1::QUANT_SCHEME_PER_CHANNEL_SYMMETRIC
                            : SchemeOf(layer));
    l->set_column_scales(HasColumnScales(layer));
  }
}

void ToProto(const RolloutView& view, v1::Rollout* out) {
  const RolloutRecord& r = view.rollout;
  out->set_model(r.model);
  out->set_version(r.version);
  out->set_baseline_version(r.baseline);
  out->set_percent(r.percent);
  for (const std::string& g : r.groups) out->add_groups(g);
  out->set_state(static_cast<v1::Rollout::State>(static_cast<int>(r.state)));
  out->set_started_unix_seconds(r.started_unix_seconds);
  for (const DeviceCount& c : view.counts) {
    v1::Rollout::Count* count = out->add_counts();
    count->set_version(c.version);
    count->set_state(c.state);
    count->set_devices(c.devices);
  }
  out->set_subscribers(view.subscribers);
}

}  // namespace weightcast
