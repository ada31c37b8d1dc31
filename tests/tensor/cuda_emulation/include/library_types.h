// CUDA's data type tags as cuBLAS takes them (the emulated device's subset).
#pragma once

enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
typedef cudaDataType_t cudaDataType;
