#include "tests/tensor/cuda_emulation/emulated_streams.h"

#include <atomic>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace moefold::cuda_emulation {
namespace {

// A held work and what it runs after. Once done it lets go of both, so a stream's history
// stays alive only while it is unfinished.
struct Node {
  std::mutex mutex;
  std::atomic<bool> done{false};
  std::unique_ptr<StreamWork> work;
  std::vector<std::shared_ptr<Node>> after;
};
using Nodes = std::vector<std::shared_ptr<Node>>;

// Runs what `node` follows, then its work. Without `block` it gives up (false) wherever a
// work is unfinished or another thread is running it. It holds one node's lock at a time, however
// long the chain of held work behind it.
bool advance(Node& node, bool block) {
  if (node.done) return true;
  // The node's lock, or none without `block` when another thread holds it.
  const auto lock_node = [&] {
    std::unique_lock<std::mutex> lock(node.mutex, std::defer_lock);
    block ? lock.lock() : static_cast<void>(lock.try_lock());
    return lock;
  };
  Nodes before;
  {
    const auto lock = lock_node();
    if (!lock.owns_lock()) return false;
    before = node.after;
  }
  for (const std::shared_ptr<Node>& earlier : before) {
    if (!advance(*earlier, block)) return false;
  }
  const auto lock = lock_node();
  if (!lock.owns_lock()) return false;
  if (node.done) return true;
  if (!node.work->progress(block)) return false;
  node.after.clear();
  node.work.reset();
  node.done = true;
  return true;
}

bool advance_all(const Nodes& nodes, bool block) {
  bool done = true;
  for (const std::shared_ptr<Node>& node : nodes) done = advance(*node, block) && done;
  return done;
}

void drop_done(Nodes& nodes) {
  std::erase_if(nodes, [](const auto& node) { return node->done.load(); });
}

// What each stream's next work runs after (its last work, and the work of the events it waited
// on since), and what each recorded event stands for.
struct Holds {
  std::mutex mutex;
  std::map<cudaStream_t, Nodes> streams;
  std::map<cudaEvent_t, Nodes> events;
};
Holds& holds() {
  static Holds h;
  return h;
}

// A copy of what `key` (a stream or an event) stands for, taken under the lock.
template <class Key>
Nodes nodes_of(const std::map<Key, Nodes>& of_kind, Key key) {
  std::lock_guard<std::mutex> lock(holds().mutex);
  const auto it = of_kind.find(key);
  return it == of_kind.end() ? Nodes{} : it->second;
}

// Work that runs in one go whenever it is progressed.
class Deferred final : public StreamWork {
 public:
  explicit Deferred(std::function<void()> run) : run_(std::move(run)) {}
  bool progress(bool) override {
    run_();
    return true;
  }

 private:
  std::function<void()> run_;
};

}  // namespace

void hold(cudaStream_t stream, std::unique_ptr<StreamWork> work) {
  auto node = std::make_shared<Node>();
  node->work = std::move(work);
  std::lock_guard<std::mutex> lock(holds().mutex);
  Nodes& frontier = holds().streams[stream];
  drop_done(frontier);
  node->after = std::move(frontier);
  frontier = {std::move(node)};
}

void enqueue(cudaStream_t stream, std::function<void()> work) {
  hold(stream, std::make_unique<Deferred>(std::move(work)));
}

void settle(cudaStream_t stream) {
  advance_all(nodes_of(holds().streams, stream), true);
  std::lock_guard<std::mutex> lock(holds().mutex);
  const auto it = holds().streams.find(stream);
  if (it == holds().streams.end()) return;
  drop_done(it->second);
  if (it->second.empty()) holds().streams.erase(it);
}

void record(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(holds().mutex);
  const auto it = holds().streams.find(stream);
  Nodes nodes = it == holds().streams.end() ? Nodes{} : it->second;
  drop_done(nodes);
  if (nodes.empty()) {
    holds().events.erase(event);
  } else {
    holds().events[event] = std::move(nodes);
  }
}

void wait(cudaStream_t stream, cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(holds().mutex);
  const auto it = holds().events.find(event);
  if (it == holds().events.end()) return;
  Nodes& frontier = holds().streams[stream];
  frontier.insert(frontier.end(), it->second.begin(), it->second.end());
}

void synchronize(cudaEvent_t event) { advance_all(nodes_of(holds().events, event), true); }

bool query(cudaEvent_t event) { return advance_all(nodes_of(holds().events, event), false); }

void forget(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(holds().mutex);
  holds().events.erase(event);
}

void settle_all() {
  std::vector<cudaStream_t> streams;
  {
    std::lock_guard<std::mutex> lock(holds().mutex);
    for (const auto& [stream, nodes] : holds().streams) streams.push_back(stream);
  }
  for (cudaStream_t stream : streams) settle(stream);
}

}  // namespace moefold::cuda_emulation
