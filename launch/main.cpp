// moefold: the command-line entry point.
#include <cstdio>
#include <cstring>
#include <string>

#include "checkpoint/inspect.h"
#include "launch/commands.h"

#ifndef MOEFOLD_VERSION
#define MOEFOLD_VERSION "unknown"
#endif

namespace {

constexpr const char* kUsage = R"(moefold — pretraining Mixture-of-Experts LLMs across a cluster

usage: moefold <command> [arguments]

commands:
  train       --config R [--set section.key=value ...] [--load DIR]
              pretrain; run under mpirun: mpirun -np N moefold train --config R
  eval        --config R --load DIR [--set ...]
              validation loss and perplexity of a checkpoint
  layout      --config R --world-size N [--json] [--set ...]
              every rank's coordinates and groups on the attention and expert sides
  preprocess  --input FILE [FILE ...] --output PREFIX [--tokenizer gpt2|byte] [--append-eod]
              [--vocab-file F] [--merge-file F] [--json-key K]
              JSONL (a "text" field per line) or plain text files to Megatron .bin/.idx
  ckpt inspect PATH
              a checkpoint's iteration, tensors with shapes, model config and recipe
  ckpt verify PATH
              every tensor's checksum against the one recorded when it was saved

options:
  --help      this text
  --version   the version

Recipe keys are documented in docs/recipe.md.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "--version") {
    std::printf("moefold %s\n", MOEFOLD_VERSION);
    return 0;
  }
  if (command == "train") return moefold::run_train_command(argc - 2, argv + 2);
  if (command == "eval") return moefold::run_eval_command(argc - 2, argv + 2);
  if (command == "layout") return moefold::run_layout_command(argc - 2, argv + 2);
  if (command == "preprocess") return moefold::run_preprocess_command(argc - 2, argv + 2);
  if (command == "ckpt") return moefold::run_ckpt_command(argc - 2, argv + 2);
  std::fprintf(stderr, "moefold: unknown command '%s' (see moefold --help)\n", command.c_str());
  return 2;
}
