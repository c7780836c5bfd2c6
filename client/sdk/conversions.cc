#include "client/sdk/conversions.h"

#include <string>
#include <utility>

#include "common/tensor/quantize.h"

namespace weightcast {

ModelInfo FromProto(const v1::ModelVersion& v) {
  ModelInfo info;
  info.model = v.model();
  info.version = v.version();
  info.description = v.description();
  info.layer_policy = v.layer_policy();
  info.source_bytes = v.source_bytes();
  info.tensors = v.tensors_size();
  for (const auto& t : v.tensors()) {
    info.tensor_list.push_back({t.name(),
                                {t.shape().begin(), t.shape().end()},
                                t.dtype(),
                                t.layer_class()});
    if (t.dtype().find("float") == std::string::npos) continue;
    int64_t n = 1;
    for (int64_t d : t.shape()) n *= d;
    info.float_weights += n;
  }
  auto accuracy = [](const v1::Accuracy& a) {
    AccuracyFigures figures{a.top1(), a.top2(), a.examples()};
    if (a.has_output_cosine()) figures.output_cosine = a.output_cosine();
    figures.labelled = !a.unlabelled();
    return figures;
  };
  info.has_eval_bundle = v.has_eval_bundle();
  if (v.has_reference_accuracy())
    info.reference_accuracy = accuracy(v.reference_accuracy());
  info.base_version = v.base_version();
  for (const auto& t : v.tiers()) {
    TierSummary tier{t.name(), v1::TierInfo::State_Name(t.state()), t.bytes(),
                     t.bits_per_weight(), t.worst_sqnr_db()};
    tier.worst_layer_sqnr_db = t.has_worst_layer_sqnr_db()
                                   ? t.worst_layer_sqnr_db()
                                   : t.worst_sqnr_db();
    tier.worst_layer = t.worst_layer();
    if (t.has_accuracy()) tier.accuracy = accuracy(t.accuracy());
    for (const auto& l : t.layers()) {
      tier.layers.push_back({l.name(), v1::LayerCodec_Name(l.codec()),
                             l.bytes(), l.bits_per_weight(), l.sqnr_db(),
                             l.qp()});
      if (l.quant_scheme() != v1::QUANT_SCHEME_UNSPECIFIED) {
        tier.layers.back().quant_scheme = std::string(
            QuantSchemeName(static_cast<QuantScheme>(l.quant_scheme() - 1)));
        if (l.outliers()) tier.layers.back().quant_scheme += "+outliers";
        if (l.column_scales()) tier.layers.back().quant_scheme += "+cols";
        if (l.mosaic()) tier.layers.back().quant_scheme += "+mosaic";
      }
    }
    tier.error = t.error();
    info.tiers.push_back(std::move(tier));
  }
  return info;
}

}  // namespace weightcast
