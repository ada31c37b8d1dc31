// Rank-prefixed logging: "[rank 3] message". Progress lines (log_info) print on world rank 0
// only, unless set_log_all_ranks(true); warnings and errors print on every rank.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"
#include "parallel/context.h"

namespace moefold {

void set_log_all_ranks(bool all_ranks);
bool log_all_ranks();

// Writes one whole line "[rank R] message" (stdout for info, stderr for warnings).
void write_log_line(int world_rank, std::string_view level, std::string_view message,
                    bool to_stderr);

template <class... Args>
void log_info(const ParallelContext& context, const Args&... args) {
  if (context.coords.world_rank != 0 && !log_all_ranks()) return;
  write_log_line(context.coords.world_rank, "", absl::StrCat(args...), false);
}

template <class... Args>
void log_warning(const ParallelContext& context, const Args&... args) {
  write_log_line(context.coords.world_rank, "warning: ", absl::StrCat(args...), true);
}

}  // namespace moefold
