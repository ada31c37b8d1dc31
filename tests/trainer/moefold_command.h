// The moefold binary run as a user runs it (for the command-line tests of every folder): its exit
// code and its output, stdout and stderr together. The including test defines MOEFOLD_BINARY.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace moefold::testing {

struct CommandRun {
  int exit_code = 0;
  std::string output;  // stdout and stderr together
};

// As root, Open MPI's singleton start needs the two OMPI_ALLOW_RUN_AS_ROOT variables (CI runs the
// tests as root).
inline CommandRun run_moefold(const std::string& args) {
  const std::string command = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " +
                              std::string(MOEFOLD_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  CommandRun run;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    run.output.append(buffer.data(), n);
  }
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

}  // namespace moefold::testing
