// `moefold ckpt inspect PATH`: a readable summary of one checkpoint, from the files alone.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moefold {

// The checkpoint at `path` (a save directory, through `latest`, or an iteration directory):
// iteration, consumed samples, the layout and version that wrote it, the model config
// attributes, every tensor of model.h5 and optim.h5 with its shape, and the recipe. Reads the
// files serially (no MPI needed). Errors are one line naming the file.
absl::StatusOr<std::string> inspect_checkpoint(const std::string& path);

// The `moefold ckpt` command: argv = {"inspect" | "verify", PATH} (verify.h). Prints the summary to stdout or one
// error line to stderr; returns the exit code.
int run_ckpt_command(int argc, char** argv);

}  // namespace moefold
