// WMMA for the emulated device: wmma_emulation.h (through cuda_emulation.h).
#pragma once

#include <cuda_runtime.h>
