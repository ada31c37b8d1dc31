#include "launch/stop_signals.h"

#include <csignal>

namespace moefold {
namespace {

std::atomic<int> received{0};
static_assert(std::atomic<int>::is_always_lock_free, "set from a signal handler");

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};

void on_stop_signal(int signal) {
  int none = 0;
  // The first signal asks for a clean stop; the same one again means "now".
  if (!received.compare_exchange_strong(none, signal) && none == signal) {
    std::signal(signal, SIG_DFL);
    std::raise(signal);
  }
}

}  // namespace

const std::atomic<int>& install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking reads and writes resume instead of failing
  for (int signal : kStopSignals) sigaction(signal, &action, nullptr);
  return received;
}

}  // namespace moefold
