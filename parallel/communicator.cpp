#include "parallel/communicator.h"

#include "parallel/watchdog.h"
#include "tensor/check.h"

namespace moefold {

size_t comm_dtype_size(CommDType dtype) {
  switch (dtype) {
    case CommDType::kFloat32: return 4;
    case CommDType::kFloat64: return 8;
    case CommDType::kInt32: return 4;
    case CommDType::kInt64: return 8;
    case CommDType::kUInt8: return 1;
    case CommDType::kBFloat16: return 2;
  }
  MOEFOLD_CHECK(false, "unknown CommDType " << static_cast<int>(dtype));
}

const char* comm_dtype_name(CommDType dtype) {
  switch (dtype) {
    case CommDType::kFloat32: return "float32";
    case CommDType::kFloat64: return "float64";
    case CommDType::kInt32: return "int32";
    case CommDType::kInt64: return "int64";
    case CommDType::kUInt8: return "uint8";
    case CommDType::kBFloat16: return "bfloat16";
  }
  MOEFOLD_CHECK(false, "unknown CommDType " << static_cast<int>(dtype));
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
  }
  MOEFOLD_CHECK(false, "unknown ReduceOp " << static_cast<int>(op));
}

CommDType comm_dtype_of(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return CommDType::kFloat32;
    case DType::kBFloat16: return CommDType::kBFloat16;
  }
  MOEFOLD_CHECK(false, "unknown DType " << static_cast<int>(dtype));
}

void WorkState::complete(std::string error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    MOEFOLD_CHECK(!done_, "work completed twice");
    done_ = true;
    error_ = std::move(error);
  }
  done_cv_.notify_all();
}

bool WorkState::is_done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void WorkState::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!done_) {
    const watchdog::BlockedScope blocked(what_, group_, sequence_);
    done_cv_.wait(lock, [this] { return done_; });
  }
  if (!error_.empty()) throw InternalError(error_);
}

void WorkHandle::wait() {
  if (state_) state_->wait();
}

bool WorkHandle::is_done() const { return !state_ || state_->is_done(); }

void check_counts_per_rank(std::span<const int64_t> counts, int size, const char* what) {
  MOEFOLD_CHECK(static_cast<int>(counts.size()) == size,
                what << ": " << counts.size() << " counts for a group of " << size);
}

std::vector<int64_t> Communicator::all_to_all_counts(std::span<const int64_t> send_counts) {
  check_counts_per_rank(send_counts, size(), "all_to_all_counts");
  std::vector<int64_t> recv_counts(size());
  all_to_all(send_counts.data(), recv_counts.data(), 1, CommDType::kInt64);
  return recv_counts;
}

std::vector<int64_t> Communicator::all_gather_counts(int64_t send_count) {
  std::vector<int64_t> counts(size());
  all_gather(&send_count, 1, counts.data(), CommDType::kInt64);
  return counts;
}

}  // namespace moefold
