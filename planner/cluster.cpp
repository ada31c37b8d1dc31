#include "planner/cluster.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moefold {
namespace {

// Reads the keys of one YAML map, remembering which were used so unknown keys are refused.
class KeyReader {
 public:
  KeyReader(const std::string& source, const YAML::Node& map, std::string prefix)
      : source_(source), map_(map), prefix_(std::move(prefix)) {}

  absl::Status error(const YAML::Node& at, const std::string& key, const std::string& reason) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ":", at.Mark().line + 1, ": ", prefix_, key, ": ", reason));
  }

  // A number > 0 (or >= 0 with allow_zero); missing keys are an error unless `fallback` is given.
  absl::Status number(const std::string& key, double& out, bool allow_zero = false,
                      const double* fallback = nullptr) {
    used_.insert(key);
    const YAML::Node node = map_[key];
    if (!node) {
      if (fallback != nullptr) {
        out = *fallback;
        return absl::OkStatus();
      }
      return error(map_, key, "missing");
    }
    try {
      out = node.as<double>();
    } catch (const YAML::Exception&) {
      return error(node, key, "expected a number");
    }
    if (!std::isfinite(out) || out < 0 || (!allow_zero && out == 0)) {
      return error(node, key, allow_zero ? "must be >= 0" : "must be > 0");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<YAML::Node> map(const std::string& key) {
    used_.insert(key);
    const YAML::Node node = map_[key];
    if (!node) return error(map_, key, "missing");
    if (!node.IsMap()) return error(node, key, "expected a map of keys");
    return node;
  }

  YAML::Node raw(const std::string& key) {
    used_.insert(key);
    return map_[key];
  }

  absl::Status no_unknown_keys() const {
    for (const auto& entry : map_) {
      const std::string key = entry.first.as<std::string>();
      if (!used_.count(key)) return error(entry.first, key, "unknown key");
    }
    return absl::OkStatus();
  }

 private:
  const std::string& source_;
  YAML::Node map_;
  std::string prefix_;
  std::set<std::string> used_;
};

absl::Status read_link(KeyReader& parent, const std::string& source, const std::string& key,
                       LinkSpec& link) {
  auto node = parent.map(key);
  if (!node.ok()) return node.status();
  KeyReader r(source, *node, absl::StrCat("links.", key, "."));
  if (absl::Status s = r.number("bandwidth", link.bandwidth); !s.ok()) return s;
  if (absl::Status s = r.number("latency", link.latency, true); !s.ok()) return s;
  const double full = 1;
  if (absl::Status s = r.number("alltoall_efficiency", link.alltoall_efficiency, false, &full);
      !s.ok()) {
    return s;
  }
  return r.no_unknown_keys();
}

absl::Status read_curve(KeyReader& device, const std::string& source, ClusterSpec& c) {
  const YAML::Node curve = device.raw("gemm_efficiency");
  if (!curve || !curve.IsSequence() || curve.size() == 0) {
    return device.error(curve ? curve : YAML::Node(), "gemm_efficiency",
                        "expected a list of [smallest dimension, efficiency] pairs");
  }
  for (const YAML::Node& point : curve) {
    double dim = 0, eff = 0;
    try {
      if (!point.IsSequence() || point.size() != 2) throw YAML::Exception(point.Mark(), "");
      dim = point[0].as<double>();
      eff = point[1].as<double>();
    } catch (const YAML::Exception&) {
      return device.error(point, "gemm_efficiency", "expected [dimension, efficiency]");
    }
    if (dim < 1 || eff <= 0 || eff > 1) {
      return device.error(point, "gemm_efficiency",
                          "dimension must be >= 1 and efficiency in (0, 1]");
    }
    if (!c.gemm_efficiency.empty() && dim <= c.gemm_efficiency.back().first) {
      return device.error(point, "gemm_efficiency", "dimensions must increase");
    }
    c.gemm_efficiency.emplace_back(dim, eff);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ClusterSpec> parse_cluster_string(const std::string& yaml_text,
                                                 const std::string& source_name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ":", e.mark.line + 1,
                                                   ": YAML syntax error: ", e.msg));
  }
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": a cluster file is a map"));
  }
  ClusterSpec c;
  c.source = source_name;
  KeyReader top(source_name, root, "");
  const YAML::Node name = top.raw("name");
  c.name = name && name.IsScalar() ? name.Scalar() : source_name;
  double ranks_per_node = 0;
  if (absl::Status s = top.number("ranks_per_node", ranks_per_node); !s.ok()) return s;
  c.ranks_per_node = static_cast<int>(ranks_per_node);
  const YAML::Node precision = top.raw("precision");
  const std::string p = precision && precision.IsScalar() ? precision.Scalar() : "";
  if (p == "bf16") {
    c.compute_bytes = 2;
    c.master_weights = true;
  } else if (p == "fp32") {
    c.compute_bytes = 4;
  } else {
    return top.error(precision ? precision : root, "precision", "expected bf16 or fp32");
  }

  auto device_node = top.map("device");
  if (!device_node.ok()) return device_node.status();
  KeyReader device(source_name, *device_node, "device.");
  const double no_reserve = 0, no_overhead = 0, full = 1;
  if (absl::Status s = device.number("peak_flops", c.peak_flops); !s.ok()) return s;
  if (absl::Status s = device.number("memory_bytes", c.memory_bytes); !s.ok()) return s;
  if (absl::Status s = device.number("memory_reserved", c.memory_reserved, true, &no_reserve);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = device.number("memory_bandwidth", c.memory_bandwidth); !s.ok()) return s;
  if (absl::Status s = device.number("elementwise_efficiency", c.elementwise_efficiency, false,
                                     &full);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = device.number("attention_efficiency", c.attention_efficiency); !s.ok()) {
    return s;
  }
  if (absl::Status s = device.number("kernel_overhead", c.kernel_overhead, true, &no_overhead);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = read_curve(device, source_name, c); !s.ok()) return s;
  if (absl::Status s = device.no_unknown_keys(); !s.ok()) return s;

  auto links_node = top.map("links");
  if (!links_node.ok()) return links_node.status();
  KeyReader links(source_name, *links_node, "links.");
  if (absl::Status s = read_link(links, source_name, "intra_node", c.intra_node); !s.ok()) return s;
  if (absl::Status s = read_link(links, source_name, "inter_node", c.inter_node); !s.ok()) return s;
  if (absl::Status s = links.no_unknown_keys(); !s.ok()) return s;
  if (absl::Status s = top.no_unknown_keys(); !s.ok()) return s;
  return c;
}

absl::StatusOr<ClusterSpec> load_cluster(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the cluster file"));
  std::stringstream text;
  text << in.rdbuf();
  return parse_cluster_string(text.str(), path);
}

double gemm_efficiency(const ClusterSpec& cluster, double dimension) {
  const auto& curve = cluster.gemm_efficiency;
  if (curve.empty()) return 1.0;
  if (dimension <= curve.front().first) return curve.front().second;
  if (dimension >= curve.back().first) return curve.back().second;
  for (size_t i = 1; i < curve.size(); ++i) {
    if (dimension <= curve[i].first) {
      const double x0 = std::log2(curve[i - 1].first), x1 = std::log2(curve[i].first);
      const double t = (std::log2(dimension) - x0) / (x1 - x0);
      return curve[i - 1].second + t * (curve[i].second - curve[i - 1].second);
    }
  }
  return curve.back().second;
}

}  // namespace moefold
