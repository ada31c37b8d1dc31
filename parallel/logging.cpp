#include "parallel/logging.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>

namespace moefold {
namespace {

std::atomic<bool> all_ranks_flag{false};

}  // namespace

void set_log_all_ranks(bool all_ranks) { all_ranks_flag = all_ranks; }

bool log_all_ranks() { return all_ranks_flag; }

void write_log_line(int world_rank, std::string_view level, std::string_view message,
                    bool to_stderr) {
  // One fwrite per line so that lines from different threads never interleave.
  std::string line = absl::StrCat("[rank ", world_rank, "] ");
  line.append(level).append(message).append("\n");
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::FILE* stream = to_stderr ? stderr : stdout;
  std::fwrite(line.data(), 1, line.size(), stream);
  std::fflush(stream);
}

}  // namespace moefold
