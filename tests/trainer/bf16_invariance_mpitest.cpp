// Invariance under bf16 mixed precision (training.bf16): every parallel dimension gives the
// per-step losses and gradient norms of one process running bf16 on the same global batch, at a
// bf16 tolerance. Layouts reduce in other orders and round partial sums to bf16 where one
// process does not (TP's and ETP's reductions, the all-to-all's combine), so bit equality is
// not expected: each such rounding moves an activation by at most 2^-9 of itself, which moves
// the mean LM loss over the batch by ~1e-3 relative: 5 steps stay within 1%. The balance
// losses are squares of router statistics (z: log-sum-exp², so twice the logits' relative
// error) over 128 tokens, where one top-k decision flipped by rounding near a tie moves aux by
// ~1%: they get 5%. The gradient norm gets 10%. A wrong layout (a missing reduction, a dropped
// shard) is off by far more.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tiny_run.h"

namespace moefold::testing {
namespace {

const std::vector<std::string> kBf16 = {"training.bf16=true"};

class Bf16Invariance : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("bf16-invariance", 29); }
  static inline std::string dir_;
};

TEST_P(Bf16Invariance, MatchesSingleProcess) {
  const InvarianceLayout& l = GetParam();
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  expect_matches_single_process(dir_, l.name, l.model, l.parallel, 5, kBf16InvarianceTolerance);
}

INSTANTIATE_TEST_SUITE_P(Layouts, Bf16Invariance,
                         ::testing::ValuesIn(every_dimension_layouts(kBf16)),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::testing
