#include "launch/command_args.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold {

absl::StatusOr<CommandArgs> parse_command_args(const char* command, int argc, char** argv,
                                               const std::vector<std::string>& allowed) {
  CommandArgs args;
  for (int i = 0; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    const size_t eq = flag.find('=');
    const bool inline_value = flag.rfind("--", 0) == 0 && eq != std::string::npos;
    if (inline_value) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (std::find(allowed.begin(), allowed.end(), flag) == allowed.end()) {
      return absl::InvalidArgumentError(absl::StrCat("moefold ", command, ": unknown argument '",
                                                     argv[i], "' (accepted: ",
                                                     absl::StrJoin(allowed, " "), ")"));
    }
    if (flag == "--json") {
      args.json = true;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("moefold ", command, ": ", flag, " needs a value"));
      }
      value = argv[++i];
    }
    if (flag == "--config") {
      args.config = value;
    } else if (flag == "--set") {
      args.overrides.push_back(value);
    } else if (flag == "--load") {
      args.load = value;
    } else if (flag == "--load-hf") {
      args.load_hf = value;
    } else if (flag == "--output") {
      args.output = value;
    } else if (flag == "--kernel-profile") {
      args.kernel_profile = value;
    } else if (flag == "--world-size") {
      if (!absl::SimpleAtoi(value, &args.world_size) || args.world_size < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "moefold ", command, ": --world-size must be a positive integer, got '", value, "'"));
      }
    }
  }
  if (args.config.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("moefold ", command, ": --config RECIPE.yaml is required"));
  }
  return args;
}

}  // namespace moefold
