// Data-parallel gradient buckets: the gradients of one reduction group (dense parameters over
// DP×CP, or expert parameters over expert-DP) live in one flat buffer, cut into buckets in
// backward order (the reverse of the parameter order). Each bucket is reduced by one async
// collective as soon as every gradient in it is final, so the reduction overlaps the rest of
// backward. With the distributed optimizer each rank owns a contiguous 1/DP slice of every bucket:
// the bucket is reduce-scattered into the owned slices, and after the optimizer step the updated
// parameters are all-gathered back, bucket by bucket.
//
// plan_buckets and owned_segments are pure functions (no communication); GradBucketSet runs the
// collectives of one group.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

struct BucketEntry {
  int id = 0;         // the caller's parameter id
  int64_t numel = 0;  // elements of the parameter on this rank
};

struct GradBucket {
  int64_t offset = 0;        // first element in the flat buffer
  int64_t numel = 0;         // elements of its parameters
  int64_t padded_numel = 0;  // numel rounded up to a multiple of the group size
  std::vector<int> entries;  // indices into BucketLayout::entries, in backward order
};

struct BucketLayout {
  int group_size = 1;
  std::vector<BucketEntry> entries;   // in backward order, as planned
  std::vector<int64_t> entry_offset;  // per entry: its first element in the flat buffer
  std::vector<int> entry_bucket;      // per entry: the bucket holding it
  std::vector<GradBucket> buckets;    // in backward order (bucket 0 is reduced first)
  int64_t total_numel = 0;            // Σ padded_numel: the flat buffer's size

  // The owned slice of every bucket, packed in bucket order: the shard buffer's size.
  int64_t shard_numel() const { return total_numel / group_size; }
  int64_t bucket_shard_numel(int b) const { return buckets[b].padded_numel / group_size; }
  // Where bucket b's owned slice sits in the shard buffer.
  int64_t bucket_shard_offset(int b) const { return buckets[b].offset / group_size; }
};

// `entries` in backward order. A bucket takes whole parameters until it holds at least
// `bucket_size` elements (a parameter is never split, so one larger than bucket_size gets a bucket
// of its own); each bucket is padded to a multiple of `group_size` with zeros.
BucketLayout plan_buckets(std::vector<BucketEntry> entries, int64_t bucket_size, int group_size);

// One piece of one parameter inside a rank's owned slices.
struct OwnedSegment {
  int entry = 0;              // index into BucketLayout::entries
  int64_t entry_offset = 0;   // first element of the parameter covered
  int64_t buffer_offset = 0;  // the same element in the flat buffer
  int64_t shard_offset = 0;   // the same element in the shard buffer
  int64_t numel = 0;
};

// The parameter pieces in `rank`'s owned slice of every bucket, in buffer order; padding is
// skipped. Over all ranks they cover every parameter element exactly once.
std::vector<OwnedSegment> owned_segments(const BucketLayout& layout, int rank);

// Timings of the step's waits on this set's collectives (wall seconds, since construction).
struct BucketWaitTimes {
  double grad_reduce_wait = 0;   // waiting for gradient reductions
  double param_gather_wait = 0;  // waiting for parameter all-gathers
};

// The flat buffers and collectives of one reduction group. Buffers: grads (total_numel); with
// the distributed optimizer also params (total_numel) and the reduced owned slices
// (shard_numel), which double as the send buffer of the parameter all-gather.
class GradBucketSet {
 public:
  GradBucketSet(BucketLayout layout, std::shared_ptr<Communicator> group, bool distributed);
  ~GradBucketSet();  // waits for whatever is still in flight (the buffers must outlive it)
  GradBucketSet(const GradBucketSet&) = delete;
  GradBucketSet& operator=(const GradBucketSet&) = delete;

  const BucketLayout& layout() const { return layout_; }
  Communicator& group() const { return *group_; }
  bool distributed() const { return distributed_; }
  const Tensor& grad_buffer() const { return grads_; }    // (total_numel)
  const Tensor& param_buffer() const { return params_; }  // (total_numel), distributed only
  // (shard_numel) this rank's reduced gradient slices, valid after wait_grad_reduces.
  const Tensor& grad_shard() const { return grad_shard_; }
  // Entry e's elements, flat (numel), in the grad / param buffer.
  Tensor grad_view(int entry) const;
  Tensor param_view(int entry) const;

  // Starts a step: zero gradients, nothing reduced yet.
  void zero_grads();
  // Entry e's gradient is final for this step; launches its bucket once every entry is.
  void mark_ready(int entry);
  // Launches the reduction of every bucket not launched yet, in bucket order.
  void launch_remaining_grad_reduces();
  // Blocks until every launched reduction is done. Without the distributed optimizer the grad
  // buffer then holds the group's sums; with it, grad_shard holds this rank's slices of them.
  void wait_grad_reduces();

  // Distributed optimizer: all-gathers the owned slice of the param buffer of every bucket into
  // the whole param buffer, in reverse bucket order (the order of the next forward).
  void launch_param_gathers();
  void wait_param_gather(int bucket);  // before the first use of the bucket's parameters
  void wait_param_gathers();
  bool param_gather_pending() const;
  int launched_grad_reduces() const;  // buckets launched since zero_grads

  const BucketWaitTimes& wait_times() const { return wait_times_; }

 private:
  void launch_grad_reduce(int bucket);

  BucketLayout layout_;
  std::shared_ptr<Communicator> group_;
  bool distributed_;
  Tensor grads_, params_, grad_shard_;
  std::vector<int> ready_count_;                       // per bucket: entries final this step
  std::vector<bool> launched_;                         // per bucket: reduction launched this step
  std::vector<WorkHandle> reduce_work_, gather_work_;  // per bucket
  BucketWaitTimes wait_times_;
};

}  // namespace moefold
