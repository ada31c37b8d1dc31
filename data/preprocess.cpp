#include "data/preprocess.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "data/indexed_dataset.h"
#include "data/tokenizer.h"

namespace moefold {
namespace {

using Clock = std::chrono::steady_clock;

// A batch of documents tokenized together: enough to keep the workers busy, little memory.
constexpr size_t kBatchDocuments = 1024;
constexpr size_t kBatchBytes = size_t{64} << 20;

bool is_jsonl(const std::string& path) {
  return absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json");
}

// Counts and timing, printed every couple of seconds and at the end.
class Progress {
 public:
  explicit Progress(std::ostream& log) : log_(log), start_(Clock::now()), last_(start_) {}
  void add(int64_t tokens) {
    ++documents_;
    tokens_ += tokens;
    if (Clock::now() - last_ > std::chrono::seconds(2)) {
      last_ = Clock::now();
      log_ << "preprocess: " << line() << std::endl;
    }
  }
  std::string line() const {
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    return absl::StrFormat("%d documents, %d tokens, %.0f tokens/s", documents_, tokens_,
                           seconds > 0 ? static_cast<double>(tokens_) / seconds : 0.0);
  }

 private:
  std::ostream& log_;
  Clock::time_point start_, last_;
  int64_t documents_ = 0;
  int64_t tokens_ = 0;
};

}  // namespace

std::string preprocess_usage() {
  return "usage: moefold preprocess --input FILE [FILE...] --output PREFIX "
         "[--tokenizer gpt2|huggingface|sentencepiece|byte] [--append-eod] [--vocab-file F] "
         "[--merge-file F] [--json-key K] [--workers N]";
}

absl::StatusOr<PreprocessOptions> parse_preprocess_args(int argc, char** argv) {
  PreprocessOptions options;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string* out) -> absl::Status {
      if (i + 1 >= argc || absl::StartsWith(argv[i + 1], "--")) {
        return absl::InvalidArgumentError(absl::StrCat("preprocess: ", arg, " needs a value"));
      }
      *out = argv[++i];
      return absl::OkStatus();
    };
    absl::Status s;
    if (arg == "--input") {
      while (i + 1 < argc && !absl::StartsWith(argv[i + 1], "--")) options.inputs.push_back(argv[++i]);
    } else if (arg == "--output") {
      s = value(&options.output_prefix);
    } else if (arg == "--tokenizer") {
      s = value(&options.tokenizer_type);
    } else if (arg == "--vocab-file") {
      s = value(&options.vocab_file);
    } else if (arg == "--merge-file") {
      s = value(&options.merge_file);
    } else if (arg == "--json-key") {
      s = value(&options.json_key);
    } else if (arg == "--workers") {
      std::string n;
      s = value(&n);
      if (s.ok() && (!absl::SimpleAtoi(n, &options.workers) || options.workers < 1)) {
        s = absl::InvalidArgumentError(
            absl::StrCat("preprocess: --workers '", n, "' is not a positive integer"));
      }
    } else if (arg == "--append-eod") {
      options.append_eod = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("preprocess: unknown argument '", arg, "'; ", preprocess_usage()));
    }
    if (!s.ok()) return s;
  }
  if (options.inputs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess: no --input; ", preprocess_usage()));
  }
  if (options.output_prefix.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("preprocess: no --output; ", preprocess_usage()));
  }
  return options;
}

absl::Status run_preprocess(const PreprocessOptions& options, std::ostream& log) {
  auto tokenizer_or =
      make_tokenizer(options.tokenizer_type, options.vocab_file, options.merge_file);
  if (!tokenizer_or.ok()) return tokenizer_or.status();
  const Tokenizer& tokenizer = **tokenizer_or;
  const IndexedDType dtype = best_fitting_dtype(tokenizer.vocab_size());

  // Written under a temporary prefix and renamed into place at the end, so a reader (another
  // rank preparing the same corpus) never opens a half-written dataset.
  const std::string temporary = absl::StrCat(options.output_prefix, ".tmp", ::getpid());
  auto builder_or = IndexedDatasetBuilder::create(temporary, dtype);
  if (!builder_or.ok()) return builder_or.status();
  IndexedDatasetBuilder& builder = *builder_or;

  Progress progress(log);
  // Documents are tokenized a batch at a time by `workers` threads (each takes the next
  // untokenized one) and written in input order, so the output does not depend on the workers.
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  auto flush = [&]() -> absl::Status {
    std::vector<std::vector<int32_t>> ids(batch.size());
    std::atomic<size_t> next{0};
    const auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < batch.size();) ids[i] = tokenizer.encode(batch[i]);
    };
    {
      std::vector<std::jthread> helpers;
      for (int w = 1; w < options.workers; ++w) helpers.emplace_back(work);
      work();
    }
    for (std::vector<int32_t>& document : ids) {
      if (options.append_eod) document.push_back(tokenizer.eod_id());
      if (absl::Status s = builder.add_item(document); !s.ok()) return s;
      builder.end_document();
      progress.add(static_cast<int64_t>(document.size()));
    }
    batch.clear();
    batch_bytes = 0;
    return absl::OkStatus();
  };
  auto add_document = [&](std::string text) -> absl::Status {
    batch_bytes += text.size();
    batch.push_back(std::move(text));
    return batch.size() >= kBatchDocuments || batch_bytes >= kBatchBytes ? flush()
                                                                          : absl::OkStatus();
  };
  auto process = [&](const std::string& path) -> absl::Status {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    if (!is_jsonl(path)) {
      std::ostringstream text;
      text << in.rdbuf();
      return add_document(text.str());
    }
    std::string line;
    for (int64_t line_number = 1; std::getline(in, line); ++line_number) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
      if (record.is_discarded()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_number, ": not valid JSON"));
      }
      if (!record.is_object() || !record.contains(options.json_key) ||
          !record[options.json_key].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", line_number, ": no string field \"", options.json_key, "\""));
      }
      if (absl::Status s = add_document(record[options.json_key].get<std::string>()); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  };

  absl::Status status;
  for (const std::string& path : options.inputs) {
    status = process(path);
    if (!status.ok()) break;
  }
  if (status.ok()) status = flush();
  if (status.ok()) status = builder.finalize();
  std::error_code ec;
  if (!status.ok()) {
    std::filesystem::remove(data_file_path(temporary), ec);
    std::filesystem::remove(index_file_path(temporary), ec);
    return status;
  }
  for (const auto& [from, to] :
       {std::pair{data_file_path(temporary), data_file_path(options.output_prefix)},
        std::pair{index_file_path(temporary), index_file_path(options.output_prefix)}}) {
    std::filesystem::rename(from, to, ec);
    if (ec) return absl::InternalError(absl::StrCat(to, ": cannot rename into place: ", ec.message()));
  }
  log << "preprocess: done: " << progress.line() << " (" << tokenizer.name() << ", "
      << dtype_name(dtype) << ") → " << data_file_path(options.output_prefix) << ", "
      << index_file_path(options.output_prefix) << std::endl;
  return absl::OkStatus();
}

absl::Status run_preprocess(const PreprocessOptions& options) {
  return run_preprocess(options, std::cout);
}

}  // namespace moefold
