#include "parallel/mpi_progress.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {
namespace {

// Polling backs off from yielding to short sleeps so that an oversubscribed machine (more ranks
// than cores) still leaves CPU to the ranks we are waiting for.
constexpr int kYieldPolls = 64;
constexpr std::chrono::microseconds kIdleSleep(50);

}  // namespace

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, length);
}

std::shared_ptr<MpiProgressEngine> MpiProgressEngine::shared() {
  static std::mutex mutex;
  static std::weak_ptr<MpiProgressEngine> instance;
  std::lock_guard<std::mutex> lock(mutex);
  std::shared_ptr<MpiProgressEngine> engine = instance.lock();
  if (!engine) {
    engine = std::make_shared<MpiProgressEngine>();
    instance = engine;
  }
  return engine;
}

MpiProgressEngine::MpiProgressEngine() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  MOEFOLD_CHECK(initialized && !finalized, "MPI is not initialised (use MpiRuntime)");
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  MOEFOLD_CHECK(provided >= MPI_THREAD_SERIALIZED,
                "MPI was initialised with thread level " << provided
                                                         << "; the communication thread needs "
                                                            "MPI_THREAD_SERIALIZED or better");
  serialized_ = provided < MPI_THREAD_MULTIPLE;
  thread_ = std::thread([this] { run(); });
}

MpiProgressEngine::~MpiProgressEngine() {
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  thread_.join();
}

WorkHandle MpiProgressEngine::submit(StartFn start, const char* what,
                                     std::shared_ptr<const std::string> group, FinishFn finish,
                                     uint64_t sequence) {
  auto state = std::make_shared<WorkState>(what, std::move(group), sequence);
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    MOEFOLD_CHECK(!stopping_, "work submitted to a stopping MPI progress engine");
    queue_.push_back(Operation{std::move(start), std::move(finish), state, {}});
  }
  queue_cv_.notify_one();
  return WorkHandle(state);
}

std::unique_lock<std::mutex> MpiProgressEngine::lock_mpi() {
  return serialized_ ? std::unique_lock<std::mutex>(mpi_mutex_) : std::unique_lock<std::mutex>();
}

void MpiProgressEngine::start(Operation& op) {
  try {
    op.request = op.start();
  } catch (const std::exception& e) {
    op.request = MPI_REQUEST_NULL;
    op.state->complete(e.what());
  }
}

void MpiProgressEngine::complete(Operation& op, std::string error) {
  if (error.empty() && op.finish) {
    try {
      op.finish();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  op.state->complete(std::move(error));
}

void MpiProgressEngine::run() {
  std::vector<Operation> active;
  int idle_polls = 0;
  while (true) {
    std::deque<Operation> arrived;
    {
      std::unique_lock<std::mutex> lock(queue_mutex_);
      if (active.empty()) {
        queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping with nothing left
      }
      arrived.swap(queue_);
    }
    bool progressed = !arrived.empty();
    {
      std::unique_lock<std::mutex> mpi_lock = lock_mpi();
      for (Operation& op : arrived) {
        start(op);
        if (!op.state->is_done()) active.push_back(std::move(op));
      }
      for (size_t i = 0; i < active.size();) {
        Operation& op = active[i];
        int flag = 0;
        const int rc = MPI_Test(&op.request, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || flag) {
          complete(op, rc == MPI_SUCCESS ? std::string() : "MPI_Test: " + mpi_error_string(rc));
          active.erase(active.begin() + static_cast<std::ptrdiff_t>(i));
          progressed = true;
        } else {
          ++i;
        }
      }
    }
    if (progressed) {
      idle_polls = 0;
    } else if (++idle_polls < kYieldPolls) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(kIdleSleep);
    }
  }
}

}  // namespace moefold
