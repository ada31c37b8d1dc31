// moefold: the command-line entry point. Subcommands are added as they land.
#include <cstdio>
#include <cstring>
#include <string>

#ifndef MOEFOLD_VERSION
#define MOEFOLD_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("moefold %s\n", MOEFOLD_VERSION);
    return 0;
  }
  std::printf("usage: moefold --version\n");
  return argc >= 2 ? 2 : 0;
}
