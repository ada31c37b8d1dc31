#include "data/bpe_merges.h"

#include <queue>

namespace moefold {

void BpeMerges::add(int32_t left, int32_t right, int32_t merged) {
  // A pair listed twice keeps its first (lower) rank, as the tokenizers library does.
  merges_.emplace(key(left, right), Merge{static_cast<int32_t>(merges_.size()), merged});
}

void BpeMerges::apply(std::vector<int32_t>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  std::vector<int> next(n), prev(n);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // A candidate: the pair starting at `at`, valid while both its symbols are unchanged.
  struct Candidate {
    int32_t rank;
    int at;
    int32_t left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : at > o.at; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int at) {
    if (at < 0 || next[at] < 0) return;
    const auto it = merges_.find(key(symbols[at], symbols[next[at]]));
    if (it != merges_.end()) queue.push({it->second.rank, at, symbols[at], symbols[next[at]]});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const int right = next[c.at];
    if (symbols[c.at] != c.left || right < 0 || symbols[right] != c.right) continue;  // stale
    symbols[c.at] = merges_.at(key(c.left, c.right)).merged;
    symbols[right] = -1;  // removed
    next[c.at] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.at;
    consider(prev[c.at]);
    consider(c.at);
  }
  int out = 0;
  for (int i = 0; i < n; ++i) {
    if (symbols[i] >= 0) symbols[out++] = symbols[i];
  }
  symbols.resize(out);
}

}  // namespace moefold
