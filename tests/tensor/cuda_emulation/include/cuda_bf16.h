// bf16 for the emulated device: cuda_emulation.h's __nv_bfloat16 (the kernels use its bits).
#pragma once

#include <cuda_runtime.h>
