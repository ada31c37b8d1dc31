// Internal invariant checks. A failed check is a bug in moefold, not bad user input: user input
// errors travel as absl::Status values instead (STYLE.md, rule 10).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moefold {

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] inline void fail_check(const char* expr, const char* file, int line,
                                    const std::string& message) {
  std::ostringstream out;
  out << file << ":" << line << ": check failed: " << expr;
  if (!message.empty()) out << " (" << message << ")";
  throw InternalError(out.str());
}

}  // namespace moefold

#define MOEFOLD_CHECK(cond, ...)                                                            \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::ostringstream moefold_check_message_;                                            \
      moefold_check_message_ << "" __VA_OPT__(<< __VA_ARGS__);                              \
      ::moefold::fail_check(#cond, __FILE__, __LINE__, moefold_check_message_.str());      \
    }                                                                                       \
  } while (0)
