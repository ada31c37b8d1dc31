#include "data/default_corpus.h"

#include <filesystem>
#include <functional>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "data/indexed_dataset.h"
#include "data/preprocess.h"
#include "data/tokenizer.h"

namespace moefold {

absl::StatusOr<std::string> prepare_default_corpus(const DataConfig& config, std::ostream& log) {
  if (config.corpus != "sotu") {
    return absl::InvalidArgumentError(
        absl::StrCat("data.corpus '", config.corpus, "' is unknown (the default corpus is sotu)"));
  }
  const std::string dir = default_data_dir() + "/sotu";
  const std::string jsonl = dir + "/sotu.jsonl";
  // Custom vocabulary files get their own dataset, named by a hash of their paths.
  std::string name = config.tokenizer_type;
  if (!config.vocab_file.empty() || !config.merge_file.empty()) {
    absl::StrAppend(&name, "_", std::hash<std::string>{}(config.vocab_file + "\n" +
                                                           config.merge_file) % 1000000007);
  }
  const std::string prefix = absl::StrCat(dir, "/sotu_", name, "_text_document");
  if (IndexedDataset::open(prefix).ok()) return prefix;
  if (!std::filesystem::exists(jsonl)) {
    return absl::NotFoundError(absl::StrCat(
        jsonl, ": the State of the Union corpus is not fetched; run scripts/fetch_data.sh "
               "(or scripts/install_deps.sh --data)"));
  }
  log << "preparing the default corpus " << jsonl << " → " << prefix << std::endl;
  PreprocessOptions options;
  options.inputs = {jsonl};
  options.tokenizer_type = config.tokenizer_type;
  options.vocab_file = config.vocab_file;
  options.merge_file = config.merge_file;
  options.output_prefix = prefix;
  options.append_eod = true;
  if (absl::Status s = run_preprocess(options, log); !s.ok()) return s;
  return prefix;
}

}  // namespace moefold
