// A checkpoint's meta.json and `latest` readers on arbitrary text: a state or one error line,
// never a crash or an exception.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_meta.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto meta = moefold::parse_meta(text, "meta.json");
  if (!meta.ok() && meta.status().message().find('\n') != std::string::npos) {
    std::fprintf(stderr, "more than one line: %s\n", meta.status().ToString().c_str());
    std::abort();
  }
  static const std::string dir = "/tmp/moefold_fuzz_latest_" + std::to_string(::getpid());
  static const bool made = [] { return ::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST; }();
  if (!made) return 0;
  std::ofstream(dir + "/latest", std::ios::binary | std::ios::trunc) << text;
  auto latest = moefold::read_latest(dir);
  if (!latest.ok() && latest.status().message().find('\n') != std::string::npos) {
    std::fprintf(stderr, "more than one line: %s\n", latest.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
