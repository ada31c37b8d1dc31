// The demo's default corpus (`data.corpus: sotu`): the State of the Union addresses that
// scripts/fetch_data.sh puts in <data dir>/sotu/sotu.jsonl, tokenized once with the recipe's
// tokenizer (end-of-document appended) into <data dir>/sotu/sotu_<tokenizer>_text_document and
// reused afterwards.
#pragma once

#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "data/data_config.h"

namespace moefold {

// Returns the dataset prefix for config.corpus, preprocessing it first if needed. Safe to call
// from several ranks at once (outputs are renamed into place), but cheaper from one rank
// followed by a barrier.
absl::StatusOr<std::string> prepare_default_corpus(const DataConfig& config, std::ostream& log);

}  // namespace moefold
