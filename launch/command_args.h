// Arguments shared by the recipe-driven subcommands: --config R, --set k=v (repeatable),
// --world-size N, --json, --load DIR, --load-hf DIR, --output DIR, --kernel-profile FILE.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold {

struct CommandArgs {
  std::string config;
  std::vector<std::string> overrides;  // "section.key=value"
  int world_size = 0;                  // layout only
  bool json = false;                   // layout only
  std::string load;                    // train/eval: checkpoint directory
  std::string load_hf;                 // train/import-hf: Hugging Face checkpoint folder
  std::string output;                  // import-hf: the save directory to write
  std::string kernel_profile;          // train: where rank 0 writes its GPU kernel profile
};

// `allowed` lists the flags this subcommand accepts (e.g. {"--config", "--set", "--load"}).
absl::StatusOr<CommandArgs> parse_command_args(const char* command, int argc, char** argv,
                                               const std::vector<std::string>& allowed);

}  // namespace moefold
