// gtest main that initialises MPI with only MPI_THREAD_SERIALIZED, to test the fallback in which
// every MPI call in moefold goes through the progress engine's lock. Otherwise as
// tests/mpi_test_main.cpp.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (provided != MPI_THREAD_SERIALIZED) {
    std::fprintf(stderr, "rank %d: asked MPI for MPI_THREAD_SERIALIZED, got level %d\n", rank,
                 provided);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&result, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}
