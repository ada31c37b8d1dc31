// A failed status that every rank of the job holds alike: the result of an agreement (one rank's
// error broadcast to all), or computed from values every rank shares (all-reduced losses). The
// launcher prints it once, from rank 0, and every rank exits normally; an error that may be one
// rank's alone ends the job with MPI_Abort instead, since the others may be waiting for it.
#pragma once

#include "absl/status/status.h"

namespace moefold {

absl::Status mark_agreed(absl::Status status);  // returns it with the mark (OK stays OK)
bool is_agreed(const absl::Status& status);

}  // namespace moefold
