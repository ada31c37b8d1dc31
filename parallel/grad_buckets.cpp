#include "parallel/grad_buckets.h"

#include <algorithm>
#include <cstring>

#include "parallel/blocked_timer.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
BucketLayout plan_buckets(std::vector<BucketEntry> entries, int64_t bucket_size, int group_size) {
  MOEFOLD_CHECK(bucket_size > 0 && group_size > 0,
                "bucket_size " << bucket_size << ", group_size " << group_size);
  BucketLayout layout;
  layout.group_size = group_size;
  layout.entries = std::move(entries);
  const int n = static_cast<int>(layout.entries.size());
  layout.entry_offset.resize(n);
  layout.entry_bucket.resize(n);
  const auto close_bucket = [&] {
    GradBucket& b = layout.buckets.back();
    b.padded_numel = (b.numel + group_size - 1) / group_size * group_size;
    layout.total_numel += b.padded_numel;
  };
  for (int e = 0; e < n; ++e) {
    MOEFOLD_CHECK(layout.entries[e].numel >= 0);
    if (layout.buckets.empty() || layout.buckets.back().numel >= bucket_size) {
      if (!layout.buckets.empty()) close_bucket();
      layout.buckets.push_back({layout.total_numel, 0, 0, {}});
    }
    GradBucket& b = layout.buckets.back();
    layout.entry_offset[e] = b.offset + b.numel;
    layout.entry_bucket[e] = static_cast<int>(layout.buckets.size()) - 1;
    b.numel += layout.entries[e].numel;
    b.entries.push_back(e);
  }
  if (!layout.buckets.empty()) close_bucket();
  return layout;
}

std::vector<OwnedSegment> owned_segments(const BucketLayout& layout, int rank) {
  MOEFOLD_CHECK(rank >= 0 && rank < layout.group_size);
  std::vector<OwnedSegment> out;
  for (int b = 0; b < static_cast<int>(layout.buckets.size()); ++b) {
    const int64_t shard = layout.bucket_shard_numel(b);
    const int64_t begin = layout.buckets[b].offset + rank * shard, end = begin + shard;
    for (int e : layout.buckets[b].entries) {
      const int64_t lo = std::max(begin, layout.entry_offset[e]);
      const int64_t hi = std::min(end, layout.entry_offset[e] + layout.entries[e].numel);
      if (lo >= hi) continue;
      out.push_back({e, lo - layout.entry_offset[e], lo,
                     layout.bucket_shard_offset(b) + (lo - begin), hi - lo});
    }
  }
  return out;
}

GradBucketSet::GradBucketSet(BucketLayout layout, std::shared_ptr<Communicator> group,
                             bool distributed)
    : layout_(std::move(layout)), group_(std::move(group)), distributed_(distributed) {
  MOEFOLD_CHECK(group_ != nullptr && group_->size() == layout_.group_size,
                "bucket layout planned for " << layout_.group_size << " ranks");
  grads_ = Tensor::zeros({layout_.total_numel});
  if (distributed_) {
    params_ = Tensor::zeros({layout_.total_numel});
    grad_shard_ = Tensor::zeros({layout_.shard_numel()});
  }
  const size_t buckets = layout_.buckets.size();
  ready_count_.assign(buckets, 0);
  launched_.assign(buckets, false);
  reduce_work_.resize(buckets);
  gather_work_.resize(buckets);
}

GradBucketSet::~GradBucketSet() {
  for (WorkHandle& w : reduce_work_) w.wait();
  for (WorkHandle& w : gather_work_) w.wait();
}

Tensor GradBucketSet::grad_view(int entry) const {
  const int64_t at = layout_.entry_offset[entry];
  return grads_.slice_rows(at, at + layout_.entries[entry].numel);
}

Tensor GradBucketSet::param_view(int entry) const {
  MOEFOLD_CHECK(distributed_, "the param buffer exists only with the distributed optimizer");
  const int64_t at = layout_.entry_offset[entry];
  return params_.slice_rows(at, at + layout_.entries[entry].numel);
}

void GradBucketSet::zero_grads() {
  wait_grad_reduces();  // nothing of the previous step may still write the buffers
  grads_.zero();
  std::fill(ready_count_.begin(), ready_count_.end(), 0);
  std::fill(launched_.begin(), launched_.end(), false);
}

void GradBucketSet::mark_ready(int entry) {
  const int b = layout_.entry_bucket[entry];
  MOEFOLD_CHECK(!launched_[b], "gradient of entry " << entry << " reported after its bucket " << b
                                                    << " was launched");
  if (++ready_count_[b] == static_cast<int>(layout_.buckets[b].entries.size())) {
    launch_grad_reduce(b);
  }
}

void GradBucketSet::launch_grad_reduce(int b) {
  const GradBucket& bucket = layout_.buckets[b];
  launched_[b] = true;
  float* grads = grads_.data() + bucket.offset;
  if (!distributed_) {
    reduce_work_[b] =
        group_->all_reduce_async(grads, bucket.padded_numel, CommDType::kFloat32, ReduceOp::kSum);
    return;
  }
  wait_param_gather(b);  // its send buffer is the grad shard we are about to overwrite
  reduce_work_[b] = group_->reduce_scatter_async(
      grads, grad_shard_.data() + layout_.bucket_shard_offset(b), layout_.bucket_shard_numel(b),
      CommDType::kFloat32, ReduceOp::kSum);
}

void GradBucketSet::launch_remaining_grad_reduces() {
  for (int b = 0; b < static_cast<int>(layout_.buckets.size()); ++b) {
    if (!launched_[b]) launch_grad_reduce(b);
  }
}

void GradBucketSet::wait_grad_reduces() {
  BlockedTimer timer(wait_times_.grad_reduce_wait);
  for (WorkHandle& w : reduce_work_) w.wait();
}

void GradBucketSet::launch_param_gathers() {
  MOEFOLD_CHECK(distributed_, "parameter gathers belong to the distributed optimizer");
  const int rank = group_->rank();
  for (int b = static_cast<int>(layout_.buckets.size()) - 1; b >= 0; --b) {
    const int64_t shard = layout_.bucket_shard_numel(b);
    float* send = grad_shard_.data() + layout_.bucket_shard_offset(b);
    float* params = params_.data() + layout_.buckets[b].offset;
    // MPI forbids a send buffer inside the receive buffer: the (spent) gradient slice carries
    // the owned parameters instead.
    ops::copy_memory(send, params + rank * shard, static_cast<size_t>(shard) * sizeof(float));
    gather_work_[b] = group_->all_gather_async(send, shard, params, CommDType::kFloat32);
  }
}

void GradBucketSet::wait_param_gather(int b) {
  BlockedTimer timer(wait_times_.param_gather_wait);
  gather_work_[b].wait();
}

void GradBucketSet::wait_param_gathers() {
  for (int b = 0; b < static_cast<int>(gather_work_.size()); ++b) wait_param_gather(b);
}

int GradBucketSet::launched_grad_reduces() const {
  return static_cast<int>(std::count(launched_.begin(), launched_.end(), true));
}

bool GradBucketSet::param_gather_pending() const {
  for (const WorkHandle& w : gather_work_)
    if (!w.is_done()) return true;
  return false;
}

}  // namespace moefold
