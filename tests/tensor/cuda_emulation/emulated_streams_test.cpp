// Work held on emulated streams (emulated_streams.h, the emulated NCCL's transfers) runs as a
// GPU orders it: in stream order, after the events its stream waited on, before anything later
// on its stream, and only when something waits for it; an event query progresses it without
// waiting.
#include "tests/tensor/cuda_emulation/emulated_streams.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace moefold::cuda_emulation {
namespace {

// A transfer stand-in: done once `ready` is set (at once when blocking), noting when it ran.
class Recorded final : public StreamWork {
 public:
  Recorded(std::string name, std::vector<std::string>* log, const bool* ready)
      : name_(std::move(name)), log_(log), ready_(ready) {}
  bool progress(bool block) override {
    if (!block && !*ready_) return false;
    log_->push_back(name_);
    return true;
  }

 private:
  std::string name_;
  std::vector<std::string>* log_;
  const bool* ready_;
};

struct Streams {
  cudaStream_t a = nullptr, b = nullptr;
  cudaEvent_t event = nullptr;
  Streams() {
    cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
  }
  ~Streams() {
    cudaEventDestroy(event);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
  }
};

TEST(EmulatedStreams, HeldWorkRunsInStreamOrderOnlyWhenWaitedFor) {
  Streams s;
  std::vector<std::string> log;
  bool ready = true;
  hold(s.a, std::make_unique<Recorded>("first", &log, &ready));
  hold(s.a, std::make_unique<Recorded>("second", &log, &ready));
  EXPECT_TRUE(log.empty()) << "nothing waited yet";
  ASSERT_EQ(cudaEventRecord(s.event, s.a), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(s.event), cudaSuccess);
  EXPECT_EQ(log, (std::vector<std::string>{"first", "second"}));
  ASSERT_EQ(cudaStreamSynchronize(s.a), cudaSuccess);
  EXPECT_EQ(log.size(), 2u) << "each work runs once";
}

TEST(EmulatedStreams, AQueryProgressesWithoutWaiting) {
  Streams s;
  std::vector<std::string> log;
  bool ready = false;
  hold(s.a, std::make_unique<Recorded>("transfer", &log, &ready));
  ASSERT_EQ(cudaEventRecord(s.event, s.a), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(s.event), cudaErrorNotReady);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "not ready is no error";
  ready = true;
  EXPECT_EQ(cudaEventQuery(s.event), cudaSuccess);
  EXPECT_EQ(log, std::vector<std::string>{"transfer"});
}

// A stream that waited on an event runs the event's work before its own, and a copy on it
// waits for both; work recorded after the event is not waited for.
TEST(EmulatedStreams, AWaitOrdersOneStreamAfterAnother) {
  Streams s;
  std::vector<std::string> log;
  bool ready = true;
  hold(s.a, std::make_unique<Recorded>("on a", &log, &ready));
  ASSERT_EQ(cudaEventRecord(s.event, s.a), cudaSuccess);
  hold(s.a, std::make_unique<Recorded>("later on a", &log, &ready));
  ASSERT_EQ(cudaStreamWaitEvent(s.b, s.event), cudaSuccess);
  hold(s.b, std::make_unique<Recorded>("on b", &log, &ready));
  int host = 0, device_copy = 0;
  ASSERT_EQ(cudaMemcpyAsync(&device_copy, &host, sizeof(int), cudaMemcpyHostToHost, s.b),
            cudaSuccess);
  EXPECT_EQ(log, (std::vector<std::string>{"on a", "on b"}));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(log, (std::vector<std::string>{"on a", "on b", "later on a"}));
}

}  // namespace
}  // namespace moefold::cuda_emulation
