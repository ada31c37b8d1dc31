// Byte-pair merges over token ids, as the Hugging Face tokenizers library applies them to one
// word: repeatedly the adjacent pair whose merge was learned first (lowest rank), the leftmost
// among equal ones. A heap over a linked list keeps a whole unsplit text (SentencePiece-style
// BPE, thousands of characters) at O(n log n).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace moefold {

class BpeMerges {
 public:
  // The next merge in rank order: the pair (left, right) becomes `merged`.
  void add(int32_t left, int32_t right, int32_t merged);
  size_t size() const { return merges_.size(); }
  // Merges `symbols` (token ids) in place.
  void apply(std::vector<int32_t>& symbols) const;

 private:
  struct Merge {
    int32_t rank, merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, Merge> merges_;
};

}  // namespace moefold
