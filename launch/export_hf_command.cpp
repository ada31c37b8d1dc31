// `moefold export-hf CHECKPOINT --format F --output DIR [--max-shard-size 5GB]`: one process,
// no MPI (the checkpoint is read as serial HDF5).
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "interop/export_hf.h"
#include "launch/commands.h"

namespace moefold {
namespace {

// "5GB", "200MB", "64KB" (powers of 1000, as transformers) or plain bytes.
absl::StatusOr<int64_t> parse_size(const std::string& text) {
  std::string digits = absl::AsciiStrToUpper(text);
  int64_t unit = 1;
  for (const auto& [suffix, scale] : {std::pair{"GB", int64_t{1'000'000'000}},
                                      std::pair{"MB", int64_t{1'000'000}},
                                      std::pair{"KB", int64_t{1'000}}}) {
    if (digits.size() > 2 && digits.substr(digits.size() - 2) == suffix) {
      digits.resize(digits.size() - 2);
      unit = scale;
      break;
    }
  }
  double value = 0;
  if (!absl::SimpleAtod(digits, &value) || value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-shard-size: '", text, "' is not a size like 5GB, 200MB or 4096"));
  }
  return static_cast<int64_t>(value * static_cast<double>(unit));
}

absl::StatusOr<ExportHfOptions> parse_args(int argc, char** argv) {
  ExportHfOptions options;
  bool have_format = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--format" || arg == "--output" || arg == "--max-shard-size") {
      if (i + 1 >= argc) return absl::InvalidArgumentError(arg + " needs a value");
      const std::string value = argv[++i];
      if (arg == "--format") {
        auto format = parse_hf_format(value);
        if (!format.ok()) return format.status();
        options.format = *format;
        have_format = true;
      } else if (arg == "--output") {
        options.output = value;
      } else {
        auto size = parse_size(value);
        if (!size.ok()) return size.status();
        options.max_shard_bytes = *size;
      }
    } else if (arg.rfind("--", 0) != 0 && options.checkpoint.empty()) {
      options.checkpoint = arg;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown argument '", arg, "' (usage: moefold export-hf CHECKPOINT --format "
          "mixtral|qwen2_moe|qwen3_moe|olmoe --output DIR [--max-shard-size 5GB])"));
    }
  }
  if (options.checkpoint.empty()) return absl::InvalidArgumentError("CHECKPOINT is required");
  if (!have_format) {
    return absl::InvalidArgumentError("--format mixtral|qwen2_moe|qwen3_moe|olmoe is required");
  }
  if (options.output.empty()) return absl::InvalidArgumentError("--output DIR is required");
  return options;
}

}  // namespace

int run_export_hf_command(int argc, char** argv) {
  auto options = parse_args(argc, argv);
  const auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "moefold export-hf: error: %s\n", std::string(s.message()).c_str());
    return 1;
  };
  if (!options.ok()) return fail(options.status());
  auto result = export_hf(*options);
  if (!result.ok()) return fail(result.status());
  for (const std::string& note : result->notes) std::printf("moefold export-hf: %s\n", note.c_str());
  std::printf("moefold export-hf: %s: %lld tensors, %.1f MB in %d shard(s) (%s)\n",
              options->output.c_str(), static_cast<long long>(result->tensors),
              static_cast<double>(result->bytes) / 1e6, result->shards,
              hf_format_name(options->format));
  return 0;
}

}  // namespace moefold
