// MpiProgressEngine: the per-process communication thread that drives MPI, so that async work
// progresses while the caller computes (Open MPI only moves non-blocking collectives forward
// inside MPI calls). Every MpiCommunicator submits its operations here.
//
// Each operation is started as a non-blocking MPI call on the engine thread, in submission
// order, and then polled with MPI_Test until done. Because nothing blocks inside MPI, work on
// different communicators can never deadlock against each other. With MPI_THREAD_MULTIPLE other
// threads may call MPI freely; with only MPI_THREAD_SERIALIZED every MPI call in moefold goes
// under lock_mpi().
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "parallel/communicator.h"

namespace moefold {

class MpiProgressEngine {
 public:
  // Issues the non-blocking MPI call of one operation and returns its request. Runs on the
  // engine thread; it stays alive (with whatever it captured, e.g. count arrays) until done.
  // An exception it throws fails the work (wait() rethrows it as InternalError).
  using StartFn = std::function<MPI_Request()>;
  // Runs on the engine thread once the request completed, before the work is marked done (e.g.
  // copying a host staging buffer back to the device). An exception fails the work.
  using FinishFn = std::function<void()>;

  // The process-wide engine, started on first use and stopped when its last user goes away.
  // MPI must be initialised with at least MPI_THREAD_SERIALIZED (MpiRuntime does MULTIPLE).
  static std::shared_ptr<MpiProgressEngine> shared();

  MpiProgressEngine();
  ~MpiProgressEngine();  // finishes all submitted work, then joins the thread
  MpiProgressEngine(const MpiProgressEngine&) = delete;
  MpiProgressEngine& operator=(const MpiProgressEngine&) = delete;

  // `what`, `group` and `sequence` name the work in the watchdog's report (WorkState);
  // `finish` runs once the request completed.
  WorkHandle submit(StartFn start, const char* what = "communication",
                    std::shared_ptr<const std::string> group = nullptr,
                    FinishFn finish = nullptr, uint64_t sequence = 0);

  // Held around MPI calls made outside the engine thread; a no-op lock under THREAD_MULTIPLE.
  std::unique_lock<std::mutex> lock_mpi();
  bool serialized() const { return serialized_; }

 private:
  struct Operation {
    StartFn start;
    FinishFn finish;
    std::shared_ptr<WorkState> state;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  void run();
  void start(Operation& op);
  static void complete(Operation& op, std::string error);

  bool serialized_ = false;
  std::mutex mpi_mutex_;
  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Operation> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// Text of an MPI error code, for error messages.
std::string mpi_error_string(int code);

}  // namespace moefold
