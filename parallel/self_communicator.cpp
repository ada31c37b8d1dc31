#include "parallel/self_communicator.h"

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

// Buffers may live on a device (a one-GPU run's groups of one): copied by their backends.
void copy(const void* from, void* to, int64_t count, CommDType dtype) {
  MOEFOLD_CHECK(count >= 0, "negative count " << count);
  if (count == 0 || from == to) return;
  ops::copy_memory(to, from, static_cast<size_t>(count) * comm_dtype_size(dtype));
}

void check_single(std::span<const int64_t> counts, int64_t expected, const char* what) {
  MOEFOLD_CHECK(counts.size() == 1, what << ": " << counts.size() << " counts for 1 rank");
  MOEFOLD_CHECK(counts[0] == expected, what << ": count " << counts[0] << " vs " << expected);
}

}  // namespace

WorkHandle SelfCommunicator::all_reduce_async(void*, int64_t count, CommDType, ReduceOp) {
  MOEFOLD_CHECK(count >= 0, "negative count " << count);
  return WorkHandle();
}

WorkHandle SelfCommunicator::all_gather_async(const void* send, int64_t count, void* recv,
                                              CommDType dtype) {
  copy(send, recv, count, dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::all_gather_v_async(const void* send, int64_t send_count, void* recv,
                                                std::span<const int64_t> recv_counts,
                                                CommDType dtype) {
  check_single(recv_counts, send_count, "all_gather_v");
  copy(send, recv, send_count, dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                  int64_t recv_count, CommDType dtype,
                                                  ReduceOp) {
  copy(send, recv, recv_count, dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::reduce_scatter_v_async(const void* send, void* recv,
                                                    std::span<const int64_t> recv_counts,
                                                    CommDType dtype, ReduceOp) {
  MOEFOLD_CHECK(recv_counts.size() == 1, "reduce_scatter_v: " << recv_counts.size()
                                                              << " counts for 1 rank");
  copy(send, recv, recv_counts[0], dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::all_to_all_async(const void* send, void* recv, int64_t count,
                                              CommDType dtype) {
  copy(send, recv, count, dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::all_to_all_v_async(const void* send,
                                                std::span<const int64_t> send_counts,
                                                void* recv, std::span<const int64_t> recv_counts,
                                                CommDType dtype) {
  MOEFOLD_CHECK(send_counts.size() == 1, "all_to_all_v: " << send_counts.size()
                                                          << " send counts for 1 rank");
  check_single(recv_counts, send_counts[0], "all_to_all_v");
  copy(send, recv, send_counts[0], dtype);
  return WorkHandle();
}

WorkHandle SelfCommunicator::broadcast_async(void*, int64_t count, CommDType, int root) {
  MOEFOLD_CHECK(root == 0 && count >= 0, "broadcast root " << root << " count " << count);
  return WorkHandle();
}

WorkHandle SelfCommunicator::send_async(const void* data, int64_t count, CommDType dtype,
                                        int peer, int tag) {
  MOEFOLD_CHECK(peer == 0 && count >= 0, "send to peer " << peer << " count " << count);
  std::vector<uint8_t> message(count * comm_dtype_size(dtype));
  if (!message.empty()) ops::copy_memory(message.data(), data, message.size());
  std::lock_guard<std::mutex> lock(mailbox_mutex_);
  mailbox_[tag].push_back(std::move(message));
  return WorkHandle();
}

WorkHandle SelfCommunicator::recv_async(void* data, int64_t count, CommDType dtype, int peer,
                                        int tag) {
  MOEFOLD_CHECK(peer == 0 && count >= 0, "recv from peer " << peer << " count " << count);
  std::vector<uint8_t> message;
  {
    std::lock_guard<std::mutex> lock(mailbox_mutex_);
    auto it = mailbox_.find(tag);
    MOEFOLD_CHECK(it != mailbox_.end() && !it->second.empty(),
                  "recv (tag " << tag << ") on a size-1 group has no earlier matching send");
    message = std::move(it->second.front());
    it->second.pop_front();
  }
  MOEFOLD_CHECK(message.size() == static_cast<size_t>(count) * comm_dtype_size(dtype),
                "recv of " << count << " elements got a message of " << message.size()
                           << " bytes");
  if (!message.empty()) ops::copy_memory(data, message.data(), message.size());
  return WorkHandle();
}

}  // namespace moefold
