// The `data` section of a recipe: where tokens come from and how samples are drawn.
#pragma once

#include <string>
#include <vector>

namespace moefold {

struct DataConfig {
  // Megatron's --data-path: one prefix, or a weighted blend "0.8 prefix_a 0.2 prefix_b"
  // (prefixes name PREFIX.bin / PREFIX.idx). Empty with `corpus: sotu` means the default corpus.
  std::vector<std::string> data_path;
  std::string split = "969,30,1";    // train,valid,test weights
  std::string tokenizer_type = "gpt2";  // gpt2 | byte | null (pre-tokenized; vocab_size given)
  std::string vocab_file;            // GPT-2 encoder.json; empty = the installed default
  std::string merge_file;            // GPT-2 vocab.bpe; empty = the installed default
  std::string data_cache_path;       // where sample indices are cached; empty = beside the data
  std::string corpus;                // "sotu": fetch and preprocess the default corpus
  bool reset_position_ids = false;   // reserved: positions restart at each document (not yet)
  bool eod_mask_loss = false;        // loss_mask = 0 on end-of-document labels
};

}  // namespace moefold
