// The choice between the flash and the chunked bf16 attention paths
// (tensor/attention_path_tuner.h): shape classes, one decision per class from the timings given,
// and the report lines. The GPU times the paths; the tests give the timings.
#include "tensor/attention_path_tuner.h"

#include <gtest/gtest.h>

namespace moefold {
namespace {

TEST(AttentionPathTuner, ShapeClassesRoundLengthsUpToPowersOfTwo) {
  const AttentionShapeClass a = attention_shape_class(false, {1, 4096, 4096, 16, 16, 128}, false);
  const AttentionShapeClass b = attention_shape_class(false, {1, 3000, 2049, 16, 16, 128}, false);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.query_bucket, 4096);
  EXPECT_EQ(a.key_bucket, 4096);
  EXPECT_NE(a, attention_shape_class(false, {1, 4097, 4096, 16, 16, 128}, false));
  EXPECT_NE(a, attention_shape_class(true, {1, 4096, 4096, 16, 16, 128}, false));
  EXPECT_NE(a, attention_shape_class(false, {1, 4096, 4096, 16, 8, 128}, false));
  // The dK/dV dtype matters to the backward only.
  EXPECT_EQ(a, attention_shape_class(false, {1, 4096, 4096, 16, 16, 128}, true));
  EXPECT_NE(attention_shape_class(true, {1, 4096, 4096, 16, 16, 128}, false),
            attention_shape_class(true, {1, 4096, 4096, 16, 16, 128}, true));
  EXPECT_EQ(attention_shape_class(false, {2, 1, 0, 4, 4, 64}, false).query_bucket, 1);
  EXPECT_EQ(attention_shape_class(false, {2, 1, 0, 4, 4, 64}, false).key_bucket, 0);
}

TEST(AttentionPathTuner, EachClassIsDecidedOnceForTheFasterPath) {
  AttentionPathTuner tuner;
  const AttentionShapeClass forward =
      attention_shape_class(false, {1, 4096, 4096, 16, 16, 128}, false);
  const AttentionShapeClass backward =
      attention_shape_class(true, {1, 4096, 4096, 16, 16, 128}, false);
  EXPECT_FALSE(tuner.decided(forward).has_value());
  EXPECT_EQ(tuner.decide(forward, 1.0e-3, 2.0e-3), AttentionPath::kFlash);
  EXPECT_EQ(tuner.decide(backward, 5.0e-3, 4.2e-3), AttentionPath::kChunked);
  EXPECT_EQ(tuner.decided(forward), AttentionPath::kFlash);
  EXPECT_EQ(tuner.decided(backward), AttentionPath::kChunked);
  EXPECT_EQ(tuner.decide(attention_shape_class(false, {1, 64, 64, 2, 1, 64}, false), 1e-4, 1e-4),
            AttentionPath::kFlash);  // a tie keeps flash
  const AttentionShapeClass tight = attention_shape_class(true, {8, 8192, 8192, 16, 16, 128}, true);
  EXPECT_EQ(tuner.decide_untimed(tight, "out of memory"), AttentionPath::kFlash);
  EXPECT_EQ(tuner.decided(tight), AttentionPath::kFlash);
  ASSERT_EQ(tuner.report().size(), 4u);
  EXPECT_EQ(tuner.report()[3],
            "attention backward d128 16/16 heads batch 8 q≤8192 k≤8192 (float32 dK/dV): not "
            "timed (out of memory): flash");
  EXPECT_EQ(tuner.report()[0],
            "attention forward d128 16/16 heads batch 1 q≤4096 k≤4096: flash 1.000 ms, chunked "
            "2.000 ms: flash");
  EXPECT_EQ(tuner.report()[1],
            "attention backward d128 16/16 heads batch 1 q≤4096 k≤4096: flash 5.000 ms, chunked "
            "4.200 ms: chunked");
}

TEST(AttentionPathTuner, TheEnvironmentForcesEitherPathOrLeavesTheChoiceTimed) {
  EXPECT_EQ(flash_attention_mode(nullptr), FlashAttentionMode::kTimed);
  EXPECT_EQ(flash_attention_mode("0"), FlashAttentionMode::kNever);
  EXPECT_EQ(flash_attention_mode("1"), FlashAttentionMode::kAlways);
  EXPECT_EQ(flash_attention_mode("timed"), FlashAttentionMode::kTimed);
}

}  // namespace
}  // namespace moefold
