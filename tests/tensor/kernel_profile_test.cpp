#include "tensor/kernel_profile.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moefold {
namespace {

TEST(KernelProfile, ShortNamesKeepTheFunctionAndItsTemplateArguments) {
  EXPECT_EQ(short_kernel_name("void moefold::cuda::(anonymous namespace)::flash_forward_kernel"
                              "<128>(unsigned short const*, float*, long, int)"),
            "flash_forward_kernel<128>");
  EXPECT_EQ(short_kernel_name("void moefold::cuda::add_kernel<std::pair<int, float> >(float*)"),
            "add_kernel<std::pair<int, float> >");
  EXPECT_EQ(short_kernel_name("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64"),
            "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64");
}

TEST(KernelProfile, TheTableSumsByNameLargestFirstAndFoldsTheRest) {
  const std::vector<KernelRecord> records = {{"gemm", 3'000'000, 256, 168, 106496},
                                             {"rmsnorm", 500'000, 128, 28, 0},
                                             {"gemm", 1'000'000, 256, 168, 106496},
                                             {"memcpy HtoD", 250'000},
                                             {"swiglu", 250'000, 256, 16, 0}};
  const std::string table = format_kernel_profile(records, 0.01, 2);
  EXPECT_NE(table.find("0.010 s wall, 0.005 s of device time summed over 5 records (50.0% "),
            std::string::npos)
      << table;
  const size_t gemm =
      table.find("       4.000          2      2000.00   80.0%     256   168     104.0  gemm\n");
  const size_t norm =
      table.find("       0.500          1       500.00   10.0%     128    28       0.0  rmsnorm\n");
  const size_t rest = table.find(
      "       0.500          2       250.00   10.0%       -     -         -  (2 other names)\n");
  ASSERT_NE(gemm, std::string::npos) << table;
  ASSERT_NE(norm, std::string::npos) << table;
  ASSERT_NE(rest, std::string::npos) << table;
  EXPECT_LT(gemm, norm);
  EXPECT_LT(norm, rest);
  EXPECT_NE(format_kernel_profile({}, 1.0, 5).find("over 0 records (0.0% of the wall time)"),
            std::string::npos);
}

}  // namespace
}  // namespace moefold
