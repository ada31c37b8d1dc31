#include "interop/hf_tokenizer_files.h"

#include <filesystem>
#include <fstream>
#include <vector>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"
#include "tensor/check.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

absl::Status copy_file(const std::string& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(from, ": cannot copy: ", ec.message()));
  return absl::OkStatus();
}

absl::Status write_tokenizer_config(const fs::path& dir, nlohmann::ordered_json config) {
  std::ofstream out(dir / "tokenizer_config.json");
  out << config.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError((dir / "tokenizer_config.json").string() + ": write failed");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HfTokenizerFiles> write_hf_tokenizer_files(const DataConfig& data,
                                                          const ModelConfig& config,
                                                          const std::string& dir) {
  HfTokenizerFiles out;
  auto tokenizer = make_tokenizer(data.tokenizer_type, data.vocab_file, data.merge_file,
                                  config.vocab_size);
  if (!tokenizer.ok()) {
    out.note = absl::StrCat("no tokenizer files: the recipe's tokenizer does not load here (",
                            tokenizer.status().message(), ")");
    return out;
  }
  out.ids.eos = (*tokenizer)->eod_id();
  if (data.tokenizer_type == "gpt2") {
    out.ids.bos = out.ids.eos;  // GPT-2 uses <|endoftext|> for both
    const std::string vocab = data.vocab_file.empty() ? default_gpt2_vocab_file() : data.vocab_file;
    const std::string merges = data.merge_file.empty() ? default_gpt2_merge_file() : data.merge_file;
    if (absl::Status s = copy_file(vocab, fs::path(dir) / "vocab.json"); !s.ok()) return s;
    if (absl::Status s = copy_file(merges, fs::path(dir) / "merges.txt"); !s.ok()) return s;
    if (absl::Status s = write_tokenizer_config(
            dir, {{"tokenizer_class", "GPT2Tokenizer"},
                  {"bos_token", "<|endoftext|>"},
                  {"eos_token", "<|endoftext|>"},
                  {"unk_token", "<|endoftext|>"},
                  {"add_prefix_space", false},
                  {"model_max_length", config.seq_length}});
        !s.ok()) {
      return s;
    }
    out.note = "tokenizer: GPT-2 BPE written as vocab.json, merges.txt, tokenizer_config.json";
    return out;
  }
  auto eod_text = (*tokenizer)->decode(std::vector<int32_t>{(*tokenizer)->eod_id()});
  const std::string eod = eod_text.ok() ? *eod_text : "";
  if (data.tokenizer_type == "huggingface") {
    if (absl::Status s = copy_file(data.vocab_file, fs::path(dir) / "tokenizer.json"); !s.ok()) {
      return s;
    }
    if (absl::Status s = write_tokenizer_config(
            dir, {{"tokenizer_class", "PreTrainedTokenizerFast"},
                  {"eos_token", eod},
                  {"model_max_length", config.seq_length}});
        !s.ok()) {
      return s;
    }
    out.note = "tokenizer: tokenizer.json copied, tokenizer_config.json written";
    return out;
  }
  if (data.tokenizer_type == "sentencepiece") {
    const auto* sentencepiece = dynamic_cast<const SentencePieceTokenizer*>(tokenizer->get());
    MOEFOLD_CHECK(sentencepiece != nullptr);
    if (absl::Status s = copy_file(data.vocab_file, fs::path(dir) / "tokenizer.model"); !s.ok()) {
      return s;
    }
    // LlamaTokenizer is transformers' plain SentencePiece wrapper; moefold adds no BOS/EOS.
    if (absl::Status s = write_tokenizer_config(
            dir, {{"tokenizer_class", "LlamaTokenizer"},
                  {"eos_token", sentencepiece->eod_piece()},
                  {"add_bos_token", false},
                  {"add_eos_token", false},
                  {"legacy", false},
                  {"model_max_length", config.seq_length}});
        !s.ok()) {
      return s;
    }
    out.note = "tokenizer: SentencePiece model copied as tokenizer.model (LlamaTokenizer, no "
               "BOS/EOS added; not checked against transformers here)";
    return out;
  }
  out.note = absl::StrCat("no tokenizer files: the ", data.tokenizer_type,
                          " tokenizer has no transformers form (config.json still names its "
                          "end-of-document id ", out.ids.eos, ")");
  return out;
}

}  // namespace moefold
