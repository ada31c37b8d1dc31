// An asynchronous NCCL error (a peer gone, a broken link: the GPU's transfers then wait forever)
// ends the job at once through the watchdog, long before any wait's timeout, with one line
// naming the rank, the group, the device and NCCL's error. Run only by
// nccl_emulated_async_error_np2 (MOEFOLD_TEST_NCCL_ASYNC_ERROR=1), which expects that line: the
// job does not end normally.
#include <gtest/gtest.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "parallel/nccl/nccl_communicator.h"
#include "parallel/watchdog.h"
#include "tensor/cuda_entry.h"

namespace moefold {
namespace {

TEST(NcclAsyncError, EndsTheJobAtOnceWithOneLineNamingIt) {
  const char* flag = std::getenv("MOEFOLD_TEST_NCCL_ASYNC_ERROR");
  if (flag == nullptr || std::string_view(flag) != "1") {
    GTEST_SKIP() << "runs in nccl_emulated_async_error_np2";
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ASSERT_TRUE(register_cuda_device(rank).ok());
  std::shared_ptr<MpiCommunicator> mpi = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  mpi->set_label("dp [0,1]");
  auto nccl = NcclCommunicator::create(mpi);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  watchdog::start(600, rank, [] { MPI_Abort(MPI_COMM_WORLD, 1); });
  if (rank == 1) nccl_emulation::report_async_error(ncclRemoteError);
  // The watchdog polls every second (a 600 s timeout's 1/20, at most 1 s), then gives the other
  // ranks 2 s to report.
  std::this_thread::sleep_for(std::chrono::seconds(30));
  ADD_FAILURE() << "the watchdog did not end the job";
  watchdog::stop();
}

}  // namespace
}  // namespace moefold
