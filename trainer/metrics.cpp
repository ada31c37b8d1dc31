#include "trainer/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "trainer/metrics_file.h"

namespace moefold {

double MoeLoadSummary::min_load() const {
  return tokens_per_expert.empty()
             ? 0
             : double(*std::min_element(tokens_per_expert.begin(), tokens_per_expert.end()));
}
double MoeLoadSummary::max_load() const {
  return tokens_per_expert.empty()
             ? 0
             : double(*std::max_element(tokens_per_expert.begin(), tokens_per_expert.end()));
}
double MoeLoadSummary::mean_load() const {
  if (tokens_per_expert.empty()) return 0;
  return double(std::accumulate(tokens_per_expert.begin(), tokens_per_expert.end(), int64_t{0})) /
         double(tokens_per_expert.size());
}
double MoeLoadSummary::imbalance() const {
  const double mean = mean_load();
  return mean > 0 ? max_load() / mean : 0;
}

static double peak_over_mean(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  const double mean = double(std::accumulate(v.begin(), v.end(), int64_t{0})) / double(v.size());
  return mean > 0 ? double(*std::max_element(v.begin(), v.end())) / mean : 0;
}
double MoePlacementSummary::ep_max_over_mean() const { return peak_over_mean(ep_rows_per_rank); }
double MoePlacementSummary::max_over_mean() const { return peak_over_mean(rows_per_rank); }

MetricsLogger::MetricsLogger(const std::string& jsonl_path, bool prints, bool writes_file,
                             int log_interval)
    : path_(jsonl_path),
      enabled_(prints || writes_file),
      writes_file_(writes_file),
      log_interval_(std::max(1, log_interval)) {}

absl::Status MetricsLogger::start(int64_t keep_through) {
  if (!writes_file_) return absl::OkStatus();
  if (absl::Status s = prepare_metrics_file(path_, keep_through); !s.ok()) return s;
  out_.close();
  out_.open(path_, std::ios::app);
  return absl::OkStatus();
}

void MetricsLogger::log_iteration(const IterationMetrics& m) {
  if (!enabled_) return;
  nlohmann::json record = {
      {"kind", "train"},          {"iteration", m.iteration},
      {"lm_loss", m.lm_loss},     {"aux_loss", m.aux_loss},
      {"z_loss", m.z_loss},       {"grad_norm", m.grad_norm},
      {"lr", m.lr},               {"tokens", m.tokens},
      {"step_seconds", m.step_seconds}, {"tokens_per_s", m.tokens_per_second()},
      {"tflops", m.tflops()},     {"mfu", m.mfu()},
      {"peak_memory_bytes", m.peak_memory_bytes}, {"dp_wait_seconds", m.dp_wait_seconds}};
  if (m.skipped) {
    record["skipped"] = true;
    record["skipped_reason"] = m.skipped_reason;
  }
  if (m.pipeline_idle_fraction >= 0) record["pipeline_idle_fraction"] = m.pipeline_idle_fraction;
  if (m.fssdp_gathered_fraction >= 0) {
    record["fssdp_gathered_fraction"] = m.fssdp_gathered_fraction;
    record["fssdp_blocked_seconds"] = m.fssdp_blocked_seconds;
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const MoeLoadSummary& s : m.moe) {
    nlohmann::json layer = {{"layer", s.layer},
                            {"tokens_per_expert", s.tokens_per_expert},
                            {"min_load", s.min_load()},
                            {"mean_load", s.mean_load()},
                            {"max_load", s.max_load()},
                            {"max_over_mean", s.imbalance()},
                            {"dropped_fraction", s.dropped_fraction},
                            {"bias_min", s.bias_min},
                            {"bias_max", s.bias_max}};
    if (s.placement.present) {
      const MoePlacementSummary& p = s.placement;
      layer["placement"] = {{"ep_rows_per_rank", p.ep_rows_per_rank},
                            {"rows_per_rank", p.rows_per_rank},
                            {"ep_max_over_mean", p.ep_max_over_mean()},
                            {"max_over_mean", p.max_over_mean()},
                            {"replicas", p.replicas},
                            {"gathered_bytes", p.gathered_bytes},
                            {"reduced_bytes", p.reduced_bytes}};
    }
    layers.push_back(std::move(layer));
  }
  record["moe"] = std::move(layers);
  out_ << record.dump() << '\n';
  out_.flush();
  if (m.skipped) {
    print(absl::StrFormat("[%d/%d] step skipped (training.nonfinite: skip): %s", m.iteration,
                          m.train_iters, m.skipped_reason));
  } else if (m.iteration % log_interval_ == 0 || m.iteration == m.train_iters ||
             m.iteration == 1) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    print(format_progress_line(m, elapsed));
  }
}

void MetricsLogger::log_evaluation(int iteration, double loss, int64_t tokens) {
  if (!enabled_) return;
  const double ppl = std::exp(std::min(loss, 50.0));
  nlohmann::json record = {{"kind", "eval"}, {"iteration", iteration}, {"val_loss", loss},
                           {"val_ppl", ppl}, {"tokens", tokens}};
  out_ << record.dump() << '\n';
  out_.flush();
  print(absl::StrFormat("[eval @ %d] validation loss %.4f | perplexity %.2f | %d tokens",
                        iteration, loss, ppl, tokens));
}

void MetricsLogger::print(const std::string& line) {
  if (!enabled_) return;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

static std::string format_duration(double seconds) {
  const int s = static_cast<int>(std::lround(std::max(0.0, seconds)));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string format_progress_line(const IterationMetrics& m, double elapsed_seconds) {
  constexpr int kBarWidth = 20;
  const double done = m.train_iters > 0 ? double(m.iteration) / m.train_iters : 1.0;
  const int filled = static_cast<int>(done * kBarWidth);
  const std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '-');
  const double eta = m.iteration > 0 ? elapsed_seconds / m.iteration * (m.train_iters - m.iteration)
                                     : 0.0;
  double max_imbalance = 0;
  for (const MoeLoadSummary& s : m.moe) max_imbalance = std::max(max_imbalance, s.imbalance());
  return absl::StrFormat(
      "[%*d/%d] %3d%% |%s| lm %.4f aux %.4f z %.2e gnorm %.3f lr %.2e | %.0f tok/s %.3f TFLOP/s "
      "MFU %.1f%% | load max/mean %.2f | mem %.0f MiB | ETA %s",
      static_cast<int>(std::to_string(m.train_iters).size()), m.iteration, m.train_iters,
      static_cast<int>(done * 100), bar, m.lm_loss, m.aux_loss, m.z_loss, m.grad_norm, m.lr,
      m.tokens_per_second(), m.tflops(), 100.0 * m.mfu(), max_imbalance,
      m.peak_memory_bytes / 1048576.0, format_duration(eta));
}

}  // namespace moefold
