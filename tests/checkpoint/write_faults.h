// Test-only fault injection at the system call: a shared library, linked into a test binary
// ahead of libc, that interposes pwrite/pwrite64/write and fsync/fdatasync. Once armed, the
// calls on the file whose path ends with a given suffix fail with a given errno, in this process
// only: a deterministic EIO on one rank, met by the code exactly where a failing disk would meet
// it, inside any library as well as in moefold's own writes.
#pragma once

#include <cstdint>

namespace moefold::test {

enum class FaultCall { kWrite, kSync };

void arm_write_fault(const char* path_suffix, FaultCall call, int error);
void disarm_write_faults();
// How many calls failed since the last arm.
int64_t injected_write_faults();

}  // namespace moefold::test
