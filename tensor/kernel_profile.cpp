#include "tensor/kernel_profile.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold {

std::string short_kernel_name(std::string_view demangled) {
  // The parameter list: the last '(' at template depth 0 ("(anonymous namespace)" is a scope).
  int depth = 0;
  size_t params = std::string_view::npos;
  for (size_t i = 0; i < demangled.size(); ++i) {
    const char c = demangled[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (c == '(' && depth == 0 && !demangled.substr(i).starts_with("(anonymous namespace)")) {
      params = i;
      break;
    }
  }
  std::string_view name = demangled.substr(0, params);
  // The start of the unqualified name: after the last "::" or ' ' at template depth 0.
  depth = 0;
  size_t begin = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<') ++depth;
    if (c == '>') --depth;
    if (depth != 0) continue;
    if (c == ' ') begin = i + 1;
    if (c == ':' && i + 1 < name.size() && name[i + 1] == ':') begin = i + 2;
  }
  name = name.substr(begin);
  return std::string(name.empty() ? demangled : name);
}

std::string format_kernel_profile(std::span<const KernelRecord> records, double wall_seconds,
                                  int top) {
  struct Sum {
    int64_t calls = 0, ns = 0;
    const KernelRecord* first = nullptr;
  };
  std::map<std::string, Sum> by_name;
  int64_t total_ns = 0;
  for (const KernelRecord& r : records) {
    Sum& s = by_name[r.name];
    if (s.calls++ == 0) s.first = &r;
    s.ns += r.duration_ns;
    total_ns += r.duration_ns;
  }
  std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  const double total_ms = static_cast<double>(total_ns) * 1e-6;
  std::string out = absl::StrFormat(
      "kernel profile: %.3f s wall, %.3f s of device time summed over %lld records "
      "(%.1f%% of the wall time)\n",
      wall_seconds, total_ms * 1e-3, static_cast<long long>(records.size()),
      wall_seconds > 0 ? 100.0 * total_ms * 1e-3 / wall_seconds : 0.0);
  out += absl::StrFormat("%12s %10s %12s %7s %7s %5s %9s  %s\n", "total ms", "calls", "mean us",
                         "share", "threads", "regs", "smem KiB", "name");
  const auto line = [&](const std::string& name, const Sum& s) {
    const double ms = static_cast<double>(s.ns) * 1e-6;
    const KernelRecord* launch = s.first && s.first->block_threads > 0 ? s.first : nullptr;
    out += absl::StrFormat(
        "%12.3f %10lld %12.2f %6.1f%% %7s %5s %9s  %s\n", ms, static_cast<long long>(s.calls),
        1e3 * ms / static_cast<double>(std::max<int64_t>(s.calls, 1)),
        total_ns > 0 ? 100.0 * ms / total_ms : 0.0,
        launch ? absl::StrCat(launch->block_threads) : "-",
        launch ? absl::StrCat(launch->registers) : "-",
        launch ? absl::StrFormat("%.1f", static_cast<double>(launch->shared_bytes) / 1024) : "-",
        name);
  };
  Sum rest;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (static_cast<int>(i) < top) {
      line(rows[i].first, rows[i].second);
    } else {
      rest.calls += rows[i].second.calls;
      rest.ns += rows[i].second.ns;
    }
  }
  if (rest.calls > 0) {
    line(absl::StrFormat("(%d other names)", static_cast<int>(rows.size()) - top), rest);
  }
  return out;
}

}  // namespace moefold
