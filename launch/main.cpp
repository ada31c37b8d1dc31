// moefold: the command-line entry point.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include <mpi.h>

#include "checkpoint/inspect.h"
#include "launch/commands.h"
#include "parallel/watchdog.h"

#ifndef MOEFOLD_VERSION
#define MOEFOLD_VERSION "unknown"
#endif

namespace {

struct CommandHelp {
  const char* name;
  const char* text;  // the arguments line, then what the command does
};

constexpr CommandHelp kCommands[] = {
    {"train",
     "train       --config R [--set section.key=value ...] [--load DIR | --load-hf HF_DIR]\n"
     "            [--kernel-profile FILE]\n"
     "            pretrain; run under mpirun: mpirun -np N moefold train --config R\n"
     "            (--load-hf: start from a Hugging Face mixtral/qwen2_moe/qwen3_moe checkpoint;\n"
     "            --kernel-profile FILE: rank 0's GPU kernels, copies and memsets, summed\n"
     "            by name, CUPTI needed)\n"
     "            SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 save a checkpoint at the next step and\n"
     "            exit 0\n"},
    {"eval",
     "eval        --config R --load DIR [--set ...]\n"
     "            validation loss and perplexity of a checkpoint\n"},
    {"layout",
     "layout      --config R --world-size N [--json] [--set ...]\n"
     "            every rank's coordinates and groups on the attention and expert sides\n"},
    {"plan",
     "plan        --config R --cluster C [--gpus N] [--json] [--search [--top K]]\n"
     "            [--routing-imbalance X | --routing-from metrics.jsonl] [--set ...]\n"
     "            predicted memory, step time and MFU per GPU; --search ranks every layout\n"},
    {"preprocess",
     "preprocess  --input FILE [FILE ...] --output PREFIX [--append-eod] [--json-key K]\n"
     "            [--tokenizer gpt2|huggingface|sentencepiece|byte] [--vocab-file F]\n"
     "            [--merge-file F] [--workers N] (--vocab-file: encoder.json for gpt2,\n"
     "            tokenizer.json, or a SentencePiece .model; --workers: tokenizing threads)\n"
     "            JSONL (a \"text\" field per line) or plain text files to Megatron .bin/.idx\n"},
    {"export-hf",
     "export-hf   CHECKPOINT --format mixtral|qwen2_moe|qwen3_moe|olmoe --output DIR\n"
     "            [--max-shard-size 5GB]\n"
     "            a checkpoint as Hugging Face safetensors shards, config.json and tokenizer files\n"},
    {"import-hf",
     "import-hf   HF_DIR --config R --output DIR [--set ...]\n"
     "            a Hugging Face checkpoint as a moefold checkpoint (iteration 0), under mpirun\n"},
    {"ckpt",
     "ckpt inspect PATH\n"
     "            a checkpoint's iteration, tensors with shapes, model config and recipe\n"
     "ckpt verify PATH\n"
     "            every tensor's checksum against the one recorded when it was saved\n"},
};

std::string usage() {
  std::string text =
      "moefold — pretraining Mixture-of-Experts LLMs across a cluster\n\n"
      "usage: moefold <command> [arguments]   (moefold <command> --help for one)\n\ncommands:\n";
  for (const CommandHelp& c : kCommands) {
    const std::string lines = c.text;
    size_t at = 0;
    while (at < lines.size()) {
      const size_t end = lines.find('\n', at);
      text += "  " + lines.substr(at, end - at) + "\n";
      at = end + 1;
    }
  }
  return text +
         "\noptions:\n  --help      this text\n  --version   the version\n\n"
         "Recipe keys are documented in docs/recipe.md.\n";
}

// `moefold <command> --help` (or -h anywhere in its arguments): that command's text, exit 0.
bool print_command_help(const std::string& command, int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") != 0 && std::strcmp(argv[i], "-h") != 0) continue;
    for (const CommandHelp& c : kCommands) {
      if (command != c.name) continue;
      std::printf("usage: moefold %s\nRecipe keys are documented in docs/recipe.md.\n", c.text);
      return true;
    }
  }
  return false;
}

// Runs one command; no exception (std::bad_alloc included) ever reaches the user as a stack
// trace: it becomes one line, and under MPI the whole job ends so no rank waits forever.
int run_command(const std::string& command, int argc, char** argv) {
  if (command == "train") return moefold::run_train_command(argc - 2, argv + 2);
  if (command == "eval") return moefold::run_eval_command(argc - 2, argv + 2);
  if (command == "layout") return moefold::run_layout_command(argc - 2, argv + 2);
  if (command == "plan") return moefold::run_plan_command(argc - 2, argv + 2);
  if (command == "preprocess") return moefold::run_preprocess_command(argc - 2, argv + 2);
  if (command == "export-hf") return moefold::run_export_hf_command(argc - 2, argv + 2);
  if (command == "import-hf") return moefold::run_import_hf_command(argc - 2, argv + 2);
  if (command == "ckpt") return moefold::run_ckpt_command(argc - 2, argv + 2);
  std::fprintf(stderr, "moefold: unknown command '%s' (see moefold --help)\n", command.c_str());
  return 2;
}

int fail_on_exception(const std::string& command, const char* what) {
  int initialized = 0, finalized = 0, rank = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  const bool mpi = initialized && !finalized;
  if (mpi) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "moefold %s: error on rank %d%s: %s\n", command.c_str(), rank,
               moefold::watchdog::describe_position().c_str(), what);
  std::fflush(stderr);
  int world_size = 1;
  if (mpi) MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(usage().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (print_command_help(command, argc, argv)) return 0;
  if (command == "--version") {
    std::printf("moefold %s\n", MOEFOLD_VERSION);
    return 0;
  }
  try {
    return run_command(command, argc, argv);
  } catch (const std::bad_alloc&) {
    return fail_on_exception(
        command, "out of memory (std::bad_alloc): the model, batch or data is too large for "
                 "this machine; reduce its sizes or use more ranks");
  } catch (const std::exception& e) {
    return fail_on_exception(command, e.what());
  }
}
