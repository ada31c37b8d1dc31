// Preemption: SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (SLURM's --signal, a scheduler's
// preemption notice, Ctrl-C) do not kill a training rank; they set a flag that the trainer reads
// at the next step boundary, where all ranks agree to save a checkpoint and exit 0
// (Trainer::set_stop_signal). A second signal of the same kind still ends the process at once.
#pragma once

#include <atomic>

namespace moefold {

// Installs the handlers (once per process) and returns the flag they set: the signal number,
// 0 until one arrives.
const std::atomic<int>& install_stop_signal_handlers();

}  // namespace moefold
