// The metrics file's life across runs: a fresh run starts it empty, a resume keeps the records up
// to the checkpoint's iteration (and drops what the interrupted run logged after it, which the
// resumed run logs again). A path that exists and is not a moefold metrics file is never
// touched: logging.metrics_path pointed at a data file must not destroy it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace moefold {

// Makes `path` a metrics file holding only the records of iterations <= keep_through (0 for a
// fresh run: empty), creating its directory. Refuses, naming the path, a directory, a special
// file, or a file whose lines are not moefold records. Rank 0 only (one writer).
absl::Status prepare_metrics_file(const std::string& path, int64_t keep_through);

}  // namespace moefold
