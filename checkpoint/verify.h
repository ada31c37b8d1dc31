// `moefold ckpt verify PATH`: reads every tensor of a checkpoint whole, serially (no MPI), and
// compares its checksum with the one meta.json recorded when it was saved.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moefold {

// The checkpoint at `path` (a save directory, through `latest`, or an iteration directory).
// Returns a one-line summary when every tensor matches; otherwise the first problem as one
// error line naming the file and tensor (a corrupt tensor, a tensor without a checksum, a
// checksum without its tensor, or a checkpoint that recorded no checksums).
absl::StatusOr<std::string> verify_checkpoint(const std::string& path);

}  // namespace moefold
