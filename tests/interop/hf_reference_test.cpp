// Exported mixtral and qwen3_moe folders evaluated by an independent float64 forward pass,
// written from the transformers documentation of MixtralForCausalLM and Qwen3MoeForCausalLM (not
// from moefold's code): its loss on a fixed batch equals moefold's to 1e-5.
//
// Mixtral, as documented: h = embed_tokens[ids]; per layer: x = RMSNorm(h)·input_layernorm
// (x / sqrt(mean(x²) + rms_norm_eps)); q/k/v = x·Wᵀ; RoPE with inv_freq_i = 1 / rope_theta^(2i/d),
// cos/sin of cat(freqs, freqs) and rotate_half(x) = cat(−x2, x1); attention per head with key/value
// head h / (heads / kv_heads) (repeat_kv), scores / sqrt(d), causal mask, softmax; o_proj; h += .
// Then x = RMSNorm(h)·post_attention_layernorm; router logits = x·gateᵀ; p = softmax(logits);
// top-k of p, renormalised to sum 1; out = Σ weight · w2(silu(w1 x) ⊙ w3 x); h += out. Finally
// RMSNorm(h)·norm, logits = h·lm_headᵀ (embed_tokens when tie_word_embeddings), cross-entropy.
// Qwen3-MoE differs in: d = head_dim (not hidden / heads); q and k are reshaped to heads and each
// head is RMS-normalised (q_norm, k_norm of size head_dim) before RoPE; the MoE block is `mlp`
// with experts gate_proj/up_proj/down_proj, renormalised only when norm_topk_prob; layers listed in
// mlp_only_layers are a dense SwiGLU mlp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "checkpoint/checkpoint.h"
#include "hf_test_util.h"
#include "interop/export_hf.h"
#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

using Matrix = std::vector<double>;  // row-major

struct Weights {
  std::map<std::string, IndependentTensor> tensors;
  Matrix get(const std::string& name) const {
    const auto& v = tensors.at(name).values;
    return Matrix(v.begin(), v.end());
  }
};

// y (n, out) = x (n, in) · Wᵀ, W (out, in).
Matrix linear(const Matrix& x, const Matrix& w, int n, int in, int out) {
  Matrix y(static_cast<size_t>(n) * out, 0.0);
  for (int t = 0; t < n; ++t)
    for (int o = 0; o < out; ++o) {
      double s = 0;
      for (int i = 0; i < in; ++i) s += x[t * in + i] * w[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

Matrix rms_norm(const Matrix& x, const Matrix& w, int n, int h, double eps) {
  Matrix y(x.size());
  for (int t = 0; t < n; ++t) {
    double ms = 0;
    for (int i = 0; i < h; ++i) ms += x[t * h + i] * x[t * h + i];
    const double r = 1.0 / std::sqrt(ms / h + eps);
    for (int i = 0; i < h; ++i) y[t * h + i] = x[t * h + i] * r * w[i];
  }
  return y;
}

// Deliberate departures from the documented model, to show that the comparison notices them.
struct Variant {
  bool renormalise_top_k = true;  // false: the top-k softmax probabilities as they are
  bool interleaved_rope = false;  // true: GPT-J's pairs (2i, 2i+1) instead of rotate_half
  bool skip_qk_norm = false;      // true: qwen3_moe without its q/k norms
};

// In place on (seq, heads, d) for one sequence: the rotate-half RoPE.
void rope(Matrix& x, int seq, int heads, int d, double theta, const Variant& variant) {
  for (int p = 0; p < seq; ++p)
    for (int head = 0; head < heads; ++head) {
      double* v = &x[(static_cast<size_t>(p) * heads + head) * d];
      std::vector<double> out(d);
      for (int j = 0; j < d; ++j) {
        if (variant.interleaved_rope) {
          const double angle = p / std::pow(theta, 2.0 * (j / 2) / d);
          const double rotated = j % 2 == 0 ? -v[j + 1] : v[j - 1];
          out[j] = v[j] * std::cos(angle) + rotated * std::sin(angle);
          continue;
        }
        const int i = j % (d / 2);
        const double angle = p / std::pow(theta, 2.0 * i / d);
        const double rotated = j < d / 2 ? -v[j + d / 2] : v[j - d / 2];
        out[j] = v[j] * std::cos(angle) + rotated * std::sin(angle);
      }
      std::copy(out.begin(), out.end(), v);
    }
}

double silu(double z) { return z / (1.0 + std::exp(-z)); }

// silu(x·gateᵀ) ⊙ (x·upᵀ), then ·downᵀ: one SwiGLU MLP on one token row.
Matrix swiglu(const Matrix& x, const Matrix& gate, const Matrix& up, const Matrix& down, int H,
              int F) {
  const Matrix g = linear(x, gate, 1, H, F), u = linear(x, up, 1, H, F);
  Matrix a(F);
  for (int f = 0; f < F; ++f) a[f] = silu(g[f]) * u[f];
  return linear(a, down, 1, F, H);
}

bool listed(const nlohmann::json& config, const char* key, int layer) {
  if (!config.contains(key)) return false;
  for (const auto& v : config[key]) {
    if (v.get<int>() == layer) return true;
  }
  return false;
}

double reference_loss(const Weights& w, const nlohmann::json& config, const TokenBatch& batch,
                      const Variant& variant = {}) {
  const bool mixtral = config["model_type"] == "mixtral";
  const int H = config["hidden_size"], L = config["num_hidden_layers"];
  const int nh = config["num_attention_heads"], nkv = config["num_key_value_heads"];
  const int d = config.value("head_dim", H / nh);
  const int F = mixtral ? config["intermediate_size"] : config["moe_intermediate_size"];
  const int E = mixtral ? config["num_local_experts"] : config["num_experts"];
  const int k = config["num_experts_per_tok"], V = config["vocab_size"];
  const double eps = config["rms_norm_eps"], theta = config["rope_theta"];
  const bool renormalise = mixtral || config["norm_topk_prob"].get<bool>();
  const std::string block = mixtral ? "block_sparse_moe." : "mlp.";
  const std::string w_gate = mixtral ? "w1" : "gate_proj", w_up = mixtral ? "w3" : "up_proj";
  const std::string w_down = mixtral ? "w2" : "down_proj";
  const int S = batch.seq;
  double loss_sum = 0, count = 0;
  for (int b = 0; b < batch.batch; ++b) {
    const Matrix embed = w.get("model.embed_tokens.weight");
    Matrix h(static_cast<size_t>(S) * H);
    for (int t = 0; t < S; ++t)
      for (int i = 0; i < H; ++i) h[t * H + i] = embed[batch.tokens[b * S + t] * H + i];
    for (int l = 0; l < L; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Matrix x = rms_norm(h, w.get(p + "input_layernorm.weight"), S, H, eps);
      Matrix q = linear(x, w.get(p + "self_attn.q_proj.weight"), S, H, nh * d);
      Matrix kk = linear(x, w.get(p + "self_attn.k_proj.weight"), S, H, nkv * d);
      Matrix v = linear(x, w.get(p + "self_attn.v_proj.weight"), S, H, nkv * d);
      if (w.tensors.contains(p + "self_attn.q_norm.weight") && !variant.skip_qk_norm) {
        q = rms_norm(q, w.get(p + "self_attn.q_norm.weight"), S * nh, d, eps);
        kk = rms_norm(kk, w.get(p + "self_attn.k_norm.weight"), S * nkv, d, eps);
      }
      rope(q, S, nh, d, theta, variant);
      rope(kk, S, nkv, d, theta, variant);
      Matrix o(static_cast<size_t>(S) * nh * d, 0.0);
      for (int head = 0; head < nh; ++head) {
        const int kvh = head / (nh / nkv);
        for (int i = 0; i < S; ++i) {
          std::vector<double> scores(i + 1);
          for (int j = 0; j <= i; ++j) {
            double s = 0;
            for (int c = 0; c < d; ++c) s += q[(i * nh + head) * d + c] * kk[(j * nkv + kvh) * d + c];
            scores[j] = s / std::sqrt(static_cast<double>(d));
          }
          const double m = *std::max_element(scores.begin(), scores.end());
          double z = 0;
          for (double& s : scores) z += (s = std::exp(s - m));
          for (int j = 0; j <= i; ++j)
            for (int c = 0; c < d; ++c)
              o[(i * nh + head) * d + c] += scores[j] / z * v[(j * nkv + kvh) * d + c];
        }
      }
      const Matrix attn = linear(o, w.get(p + "self_attn.o_proj.weight"), S, nh * d, H);
      for (size_t i = 0; i < h.size(); ++i) h[i] += attn[i];

      x = rms_norm(h, w.get(p + "post_attention_layernorm.weight"), S, H, eps);
      if (listed(config, "mlp_only_layers", l)) {
        const int Fd = config["intermediate_size"];
        for (int t = 0; t < S; ++t) {
          const Matrix out = swiglu(Matrix(&x[t * H], &x[t * H] + H), w.get(p + "mlp.gate_proj.weight"),
                                    w.get(p + "mlp.up_proj.weight"), w.get(p + "mlp.down_proj.weight"),
                                    H, Fd);
          for (int i = 0; i < H; ++i) h[t * H + i] += out[i];
        }
        continue;
      }
      const Matrix logits = linear(x, w.get(p + block + "gate.weight"), S, H, E);
      for (int t = 0; t < S; ++t) {
        std::vector<double> prob(E);
        const double m = *std::max_element(&logits[t * E], &logits[t * E] + E);
        double z = 0;
        for (int e = 0; e < E; ++e) z += (prob[e] = std::exp(logits[t * E + e] - m));
        for (double& pr : prob) pr /= z;
        std::vector<int> order(E);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return prob[a] > prob[c]; });
        double chosen = 0;
        for (int j = 0; j < k; ++j) chosen += prob[order[j]];
        if (!renormalise || !variant.renormalise_top_k) chosen = 1.0;
        const Matrix xt(&x[t * H], &x[t * H] + H);
        for (int j = 0; j < k; ++j) {
          const std::string ex = p + block + "experts." + std::to_string(order[j]) + ".";
          const Matrix out = swiglu(xt, w.get(ex + w_gate + ".weight"), w.get(ex + w_up + ".weight"),
                                    w.get(ex + w_down + ".weight"), H, F);
          for (int i = 0; i < H; ++i) h[t * H + i] += prob[order[j]] / chosen * out[i];
        }
      }
    }
    const Matrix final_h = rms_norm(h, w.get("model.norm.weight"), S, H, eps);
    const Matrix head = config["tie_word_embeddings"].get<bool>() ? w.get("model.embed_tokens.weight")
                                                                  : w.get("lm_head.weight");
    const Matrix logits = linear(final_h, head, S, H, V);
    for (int t = 0; t < S; ++t) {
      if (batch.loss_mask[b * S + t] == 0.0f) continue;
      const double m = *std::max_element(&logits[t * V], &logits[t * V] + V);
      double z = 0;
      for (int c = 0; c < V; ++c) z += std::exp(logits[t * V + c] - m);
      loss_sum += m + std::log(z) - logits[t * V + batch.labels[b * S + t]];
      count += 1;
    }
  }
  return loss_sum / count;
}

// A trained checkpoint with its weight matrices scaled by 8 (σ ≈ 0.16): at the init scale the
// logits are so small that the loss is near log V whatever the details; scaled, attention, RoPE
// and routing each move it.
std::string scaled_checkpoint(const std::string& dir, const std::string& ckpt,
                              std::vector<std::string> overrides) {
  overrides.push_back("checkpoint.save=" + dir + "/scaled");
  const Recipe recipe = tiny_recipe(dir + "/data/tiny_text_document", dir + "/scale", overrides);
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_TRUE((*trainer)->load_checkpoint(ckpt, /*model_only=*/true).ok());
  for (const auto& p : (*trainer)->model().registry().parameters()) {
    if (!p->weight_decay) continue;  // norm weights stay
    float* v = p->value.data();
    for (int64_t i = 0; i < p->layout.local_numel(); ++i) v[i] *= 8.0f;
  }
  EXPECT_TRUE((*trainer)->save_checkpoint(3).ok());
  return dir + "/scaled";
}

// For scripts/hf_check.py (transformers itself, where PyTorch is installed): the export and the
// batch with moefold's loss, into $MOEFOLD_HF_CHECK_OUT/<format>.
void write_hf_check_input(const std::string& hf, HfFormat format, const TokenBatch& batch,
                          double moefold_loss) {
  const char* root = std::getenv("MOEFOLD_HF_CHECK_OUT");
  if (root == nullptr || root[0] == '\0') return;
  namespace fs = std::filesystem;
  const std::string out = std::string(root) + "/" + hf_format_name(format);
  fs::remove_all(out);
  fs::create_directories(out);
  fs::copy(hf, out + "/hf", fs::copy_options::recursive);
  nlohmann::json j;
  for (int b = 0; b < batch.batch; ++b) {
    const auto row = [&](const auto& v) {
      return std::vector(v.begin() + b * batch.seq, v.begin() + (b + 1) * batch.seq);
    };
    j["tokens"].push_back(row(batch.tokens));
    j["labels"].push_back(row(batch.labels));
    j["loss_mask"].push_back(row(batch.loss_mask));
  }
  j["moefold_loss"] = moefold_loss;
  std::ofstream(out + "/batch.json") << j.dump() << "\n";
}

// Trains, scales and exports the tiny model in `format`, then compares moefold's loss on a fixed
// batch with the float64 reference's; each deliberately wrong variant must be noticed.
void expect_reference_matches(HfFormat format, const std::vector<std::string>& overrides,
                              const std::vector<Variant>& wrong_variants) {
  const std::string dir = fresh_temp_dir(std::string("reference-") + hf_format_name(format));
  const std::string ckpt = scaled_checkpoint(dir, train_and_save(dir, overrides, 3), overrides);
  auto exported = export_hf({ckpt, format, dir + "/hf"});
  ASSERT_TRUE(exported.ok()) << exported.status();

  const TokenBatch batch = fixed_batch();
  const Weights weights{read_hf_folder(dir + "/hf")};
  const nlohmann::json config = read_json_file(dir + "/hf/config.json");
  const double reference = reference_loss(weights, config, batch);

  const Recipe recipe = tiny_recipe(dir + "/data/tiny_text_document", dir + "/eval", overrides);
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->load_checkpoint(ckpt, /*model_only=*/true).ok());
  const MicroBatchStats stats = (*trainer)->model().evaluate(batch);
  const double moefold = stats.host_lm_loss_sum() / stats.loss_mask_sum;
  std::printf("moefold loss %.9f | float64 %s reference %.9f | difference %.2e\n", moefold,
              hf_format_name(format), reference, moefold - reference);
  EXPECT_NEAR(moefold, reference, 1e-5);
  EXPECT_GT(std::abs(reference - std::log(384.0)), 0.1) << "a loss far from uniform guessing";
  // The comparison is sharp: each departure moves the loss by far more than the tolerance.
  for (const Variant& wrong : wrong_variants) {
    const double off = reference_loss(weights, config, batch, wrong);
    std::printf("a deliberately wrong reference (renormalise %d, interleaved RoPE %d, no q/k "
                "norms %d): %.9f\n",
                wrong.renormalise_top_k, wrong.interleaved_rope, wrong.skip_qk_norm, off);
    EXPECT_GT(std::abs(off - moefold), 1e-3);
  }
  write_hf_check_input(dir + "/hf", format, batch, moefold);
}

TEST(HfReference, MixtralFloat64ForwardMatchesMoefold) {
  Variant no_renormalisation, interleaved;
  no_renormalisation.renormalise_top_k = false;
  interleaved.interleaved_rope = true;
  expect_reference_matches(HfFormat::kMixtral, mixtral_overrides(),
                           {no_renormalisation, interleaved});
}

// q/k norms, head dim 12 with hidden 32 and 4 heads, a dense first layer.
TEST(HfReference, Qwen3MoeFloat64ForwardMatchesMoefold) {
  Variant no_qk_norm, interleaved;
  no_qk_norm.skip_qk_norm = true;
  interleaved.interleaved_rope = true;
  expect_reference_matches(HfFormat::kQwen3Moe, qwen3_overrides(), {no_qk_norm, interleaved});
}

}  // namespace
}  // namespace moefold::testing
