// _weightcast: the C++ SDK (client/sdk/client.h) for Python, through pybind11.
// The pure-Python package `weightcast` (python/weightcast/) wraps it: it turns
// the plain dicts and buffers returned here into dataclasses and torch tensors
// (torch.frombuffer: no copy, and no libtorch include here), and maps status
// codes to exceptions (weightcast/errors.py). Every call releases the GIL while
// it waits on the network or decodes; the progress callback takes it back,
// at most every 100 ms. A Client may be used from several Python threads.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/sdk/client.h"
#include "common/base/printable.h"
#include "common/tensor/tensor.h"

namespace py = pybind11;

namespace weightcast {
namespace {

// Raises the exception weightcast.errors maps `status` to, with the status
// message (the server's, for a server error).
[[noreturn]] void Raise(const absl::Status& status) {
  py::object error = py::module_::import("weightcast.errors")
                         .attr("from_status")(static_cast<int>(status.code()),
                                              std::string(status.message()));
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())),
                  error.ptr());
  throw py::error_already_set();
}

template <typename T>
T ValueOrRaise(absl::StatusOr<T> value) {
  if (!value.ok()) Raise(value.status());
  return *std::move(value);
}

// The bytes of one pulled tensor; Python reads them through the buffer
// protocol (torch.frombuffer keeps this object alive as long as the tensor).
class TensorBuffer {
 public:
  explicit TensorBuffer(std::vector<uint8_t> bytes)
      : bytes_(std::move(bytes)) {}
  py::buffer_info Info() {
    return py::buffer_info(bytes_.data(), 1, "B", 1,
                           {static_cast<py::ssize_t>(bytes_.size())}, {1},
                           /*readonly=*/false);
  }
  size_t size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
};

py::object Accuracy(const std::optional<AccuracyFigures>& a) {
  if (!a) return py::none();
  py::dict d;
  d["top1"] = a->top1;
  d["top2"] = a->top2;
  d["examples"] = a->examples;
  d["labelled"] = a->labelled;
  d["output_cosine"] =
      a->output_cosine ? py::object(py::float_(*a->output_cosine)) : py::none();
  return std::move(d);
}

py::dict ToDict(const ModelInfo& info) {
  py::dict d;
  d["model"] = info.model;
  d["version"] = info.version;
  d["description"] = info.description;
  d["layer_policy"] = info.layer_policy;
  d["source_bytes"] = info.source_bytes;
  d["float_weights"] = info.float_weights;
  d["tensors"] = info.tensors;
  d["has_eval_bundle"] = info.has_eval_bundle;
  d["reference_accuracy"] = Accuracy(info.reference_accuracy);
  d["base_version"] = info.base_version;
  py::list tiers;
  for (const TierSummary& t : info.tiers) {
    py::dict tier;
    tier["name"] = t.name;
    tier["state"] = t.state;
    tier["bytes"] = t.bytes;
    tier["bits_per_weight"] = t.bits_per_weight;
    tier["worst_sqnr_db"] = t.worst_layer_sqnr_db;
    tier["worst_layer"] = t.worst_layer;
    tier["accuracy"] = Accuracy(t.accuracy);
    tier["error"] = t.error;
    py::list layers;
    for (const LayerSummary& l : t.layers) {
      py::dict layer;
      layer["name"] = l.name;
      layer["codec"] = l.codec;
      layer["bytes"] = l.bytes;
      layer["bits_per_weight"] = l.bits_per_weight;
      layer["sqnr_db"] = l.sqnr_db;
      layer["qp"] = l.qp;
      layer["quant_scheme"] = l.quant_scheme;
      layers.append(std::move(layer));
    }
    tier["layers"] = std::move(layers);
    tiers.append(std::move(tier));
  }
  d["tiers"] = std::move(tiers);
  return d;
}

py::dict ToDict(const PullProgress& p) {
  py::dict d;
  d["bytes_received"] = p.bytes_received;
  d["total_bytes"] = p.total_bytes;
  d["layers_decoded"] = p.layers_decoded;
  d["layers_total"] = p.layers_total;
  d["decode_backlog"] = p.decode_backlog;
  d["seconds"] = p.seconds;
  d["reconnects"] = p.reconnects;
  d["tiers_pending"] = p.tiers_pending;
  return d;
}

class PyClient {
 public:
  PyClient(const std::string& address, const std::string& token,
           const std::string& root_certs, const std::string& cert_chain,
           const std::string& private_key, double timeout_seconds) {
    ConnectOptions options;
    options.address = address;
    options.token = token;
    options.tls_root_certs_pem = root_certs;
    options.tls_cert_chain_pem = cert_chain;
    options.tls_private_key_pem = private_key;
    if (timeout_seconds > 0)
      options.call_timeout = absl::Seconds(timeout_seconds);
    client_ = ValueOrRaise(Client::Connect(options));
  }

  py::list List() {
    absl::StatusOr<
        std::vector<std::pair<std::string, std::vector<std::string>>>>
        models;
    {
      py::gil_scoped_release release;
      models = client_->List();
    }
    py::list out;
    for (auto& [name, versions] : ValueOrRaise(std::move(models)))
      out.append(py::make_tuple(name, versions));
    return out;
  }

  py::dict Describe(const std::string& model, const std::string& version) {
    absl::StatusOr<ModelInfo> info;
    {
      py::gil_scoped_release release;
      info = client_->Describe(model, version);
    }
    return ToDict(ValueOrRaise(std::move(info)));
  }

  py::dict Register(const RegisterOptions& options) {
    absl::StatusOr<ModelInfo> info;
    {
      py::gil_scoped_release release;
      info = client_->Register(options);
    }
    return ToDict(ValueOrRaise(std::move(info)));
  }

  void Warm(const std::string& model, const std::string& version,
            const std::vector<std::string>& tiers) {
    absl::Status status;
    {
      py::gil_scoped_release release;
      status = client_->Warm(model, version, tiers);
    }
    if (!status.ok()) Raise(status);
  }

  void Delete(const std::string& model, const std::string& version) {
    absl::Status status;
    {
      py::gil_scoped_release release;
      status = client_->Delete(model, version);
    }
    if (!status.ok()) Raise(status);
  }

  bool Health(double timeout_seconds) {
    absl::StatusOr<bool> serving;
    {
      py::gil_scoped_release release;
      serving = client_->Health(absl::Seconds(timeout_seconds));
    }
    return ValueOrRaise(std::move(serving));
  }

  // Returns (result, tensors): tensors is a list of (name, dtype, shape,
  // buffer) when `want_tensors`, else empty. `progress(dict)` runs with the GIL
  // at most every 100 ms (and for every change of tiers_pending); an exception
  // it raises (KeyboardInterrupt included: signals are checked there too)
  // cancels the pull and is raised here.
  py::tuple Pull(PullOptions options, bool want_tensors,
                 std::optional<py::function> progress) {
    std::atomic<bool> cancel{false};
    std::optional<py::error_already_set> raised;
    auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    int last_pending = -1;
    std::optional<PullProgress> undelivered;  // the latest event, if skipped
    // With the GIL held: the Python callback; an exception cancels the pull.
    auto deliver = [&](const PullProgress& p) {
      if (raised) return;
      try {
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        if (progress) (*progress)(ToDict(p));
      } catch (py::error_already_set& e) {
        raised.emplace(std::move(e));
        cancel = true;
      }
    };
    options.cancel = &cancel;
    options.progress = [&](const PullProgress& p) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last < std::chrono::milliseconds(100) &&
          p.tiers_pending == last_pending) {
        undelivered = p;
        return;
      }
      last = now;
      last_pending = p.tiers_pending;
      undelivered.reset();
      py::gil_scoped_acquire acquire;
      deliver(p);
    };
    Model model;
    if (want_tensors) options.output_model = &model;
    absl::StatusOr<PullResult> result;
    {
      py::gil_scoped_release release;
      result = client_->Pull(options);
    }
    if (result.ok() && undelivered) deliver(*undelivered);  // the last event
    if (raised) throw std::move(*raised);
    const PullResult pulled = ValueOrRaise(std::move(result));
    py::dict d;
    d["version"] = pulled.version;
    d["tier"] = pulled.tier;
    d["bytes"] = pulled.bytes;
    d["seconds"] = pulled.seconds;
    d["reconnects"] = pulled.reconnects;
    d["layers_refetched"] = pulled.layers_refetched;
    d["delta_layers"] = pulled.delta_layers;
    d["delta_fallback"] = pulled.delta_fallback;
    d["coarse_tier"] = pulled.coarse.tier;
    d["http_layers"] = pulled.http_layers;
    d["http_fallback"] = pulled.http_fallback;
    py::list warnings;  // a server's words may be in them: valid UTF-8 only
    for (const std::string& warning : pulled.warnings)
      warnings.append(Printable(warning));
    d["warnings"] = std::move(warnings);
    py::list tensors;
    for (Tensor& t : model.tensors) {
      tensors.append(py::make_tuple(
          t.name, std::string(DTypeName(t.dtype)), t.shape,
          py::cast(std::make_unique<TensorBuffer>(std::move(t.data)))));
    }
    return py::make_tuple(std::move(d), std::move(tensors));
  }

 private:
  std::unique_ptr<Client> client_;  // thread-safe (client.h)
};

}  // namespace
}  // namespace weightcast

PYBIND11_MODULE(_weightcast, m) {
  using weightcast::PyClient;
  using weightcast::TensorBuffer;
  m.doc() = "weightcast's C++ SDK; use the `weightcast` package, not this.";
  py::class_<TensorBuffer>(m, "TensorBuffer", py::buffer_protocol())
      .def_buffer(&TensorBuffer::Info)
      .def("__len__", &TensorBuffer::size);
  py::class_<PyClient>(m, "Client")
      .def(py::init<const std::string&, const std::string&, const std::string&,
                    const std::string&, const std::string&, double>())
      .def("list", &PyClient::List)
      .def("describe", &PyClient::Describe)
      .def("register",
           [](PyClient& self, const std::string& model,
              const std::string& version, const std::string& path,
              const std::string& ladder, const std::string& description,
              const std::string& policy_json, const std::string& eval_module,
              const std::string& eval_data, const std::string& base_version) {
             weightcast::RegisterOptions options;
             options.model = model;
             options.version = version;
             options.checkpoint_path = path;
             options.tier_ladder = ladder;
             options.description = description;
             options.layer_policy_json = policy_json;
             options.eval_module_path = eval_module;
             options.eval_data_path = eval_data;
             options.base_version = base_version;
             return self.Register(options);
           })
      .def("warm", &PyClient::Warm)
      .def("delete", &PyClient::Delete)
      .def("health", &PyClient::Health)
      .def("pull",
           [](PyClient& self, const std::string& model,
              const std::string& version, const std::string& tier,
              uint64_t max_bytes, double min_sqnr_db, double max_accuracy_drop,
              double bits_per_second, double within_seconds, bool int8,
              const std::string& output_path, bool want_tensors,
              const std::string& base_dir, const std::string& coarse_tier,
              const std::string& coarse_output_path,
              double max_bytes_per_second, int decode_threads,
              int max_reconnects, std::optional<py::function> progress,
              std::optional<double> min_output_cosine) {
             weightcast::PullOptions options;
             options.model = model;
             options.version = version;
             options.tier.name = tier;
             options.tier.max_bytes = max_bytes;
             options.tier.min_sqnr_db = min_sqnr_db;
             options.tier.max_accuracy_drop = max_accuracy_drop;
             options.tier.min_output_cosine = min_output_cosine;
             options.tier.bits_per_second = bits_per_second;
             options.tier.within = absl::Seconds(within_seconds);
             options.int8_output = int8;
             options.output_path = output_path;
             options.base_dir = base_dir;
             options.coarse_tier = coarse_tier;
             options.coarse_output_path = coarse_output_path;
             options.max_bytes_per_second = max_bytes_per_second;
             options.decode_threads = decode_threads;
             options.max_reconnects = max_reconnects;
             return self.Pull(std::move(options), want_tensors,
                              std::move(progress));
           });
}
