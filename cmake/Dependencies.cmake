# Every dependency is a Debian package found through find_package (see scripts/install_deps.sh).
find_package(MPI REQUIRED COMPONENTS C CXX)

set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "moefold needs HDF5 built for MPI (parallel HDF5); found a serial HDF5 at "
          "'${HDF5_INCLUDE_DIRS}'. On Debian: apt-get install libhdf5-openmpi-dev")
endif()
add_library(moefold_hdf5 INTERFACE)
target_include_directories(moefold_hdf5 SYSTEM INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(moefold_hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_compile_definitions(moefold_hdf5 INTERFACE ${HDF5_DEFINITIONS})

find_package(yaml-cpp REQUIRED)
find_package(absl REQUIRED)
find_package(OpenBLAS CONFIG REQUIRED)
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
find_package(ICU REQUIRED COMPONENTS uc i18n)
find_package(Threads REQUIRED)
# The CUDA emulation's fibers (tests/tensor/cuda_emulation).
find_package(Boost 1.74 REQUIRED COMPONENTS context)
find_package(nlohmann_json 3 REQUIRED)

# xxHash (checkpoint checksums): Debian's libxxhash-dev ships no CMake config.
find_path(MOEFOLD_XXHASH_INCLUDE xxhash.h REQUIRED)
find_library(MOEFOLD_XXHASH_LIB xxhash REQUIRED)
add_library(moefold_xxhash INTERFACE)
target_include_directories(moefold_xxhash SYSTEM INTERFACE ${MOEFOLD_XXHASH_INCLUDE})
target_link_libraries(moefold_xxhash INTERFACE ${MOEFOLD_XXHASH_LIB})

# OpenBLAS's Debian config package sets variables, not a target.
add_library(moefold_blas INTERFACE)
target_include_directories(moefold_blas SYSTEM INTERFACE ${OpenBLAS_INCLUDE_DIRS})
target_link_libraries(moefold_blas INTERFACE ${OpenBLAS_LIBRARIES})

# CUDA toolkit and NCCL come from the CUDA installation (NCCL has no CMake target). The backend
# needs nvcc and cuBLAS; the NCCL communicator is built when NCCL is found as well. cuDNN is not
# used (its fused attention has no float32 path), so it is not required.
set(MOEFOLD_HAVE_CUDA OFF)
set(MOEFOLD_HAVE_NCCL OFF)
set(MOEFOLD_EMULATED_CUDA OFF)
if(MOEFOLD_CUDA STREQUAL "EMULATED")
  # Every binary gets the CUDA backend built for the CPU's emulated device
  # (tests/tensor/cuda_emulation) and NCCL over MPI for it (tests/parallel/nccl_emulation): the
  # trainer's GPU paths run without a GPU, nvcc or NCCL.
  set(MOEFOLD_HAVE_CUDA ON)
  set(MOEFOLD_EMULATED_CUDA ON)
  set(MOEFOLD_HAVE_NCCL ON)
  set(MOEFOLD_NCCL_LIB moefold_nccl_emulated)
  set(MOEFOLD_NCCL_INCLUDE ${PROJECT_SOURCE_DIR}/tests/parallel/nccl_emulation/include)
elseif(NOT MOEFOLD_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Set before enable_language: afterwards CMake has filled in nvcc's own default (sm_75 for
    # nvcc 13), which cannot be told apart from a user's choice.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(CMAKE_CUDA_ARCHITECTURES 80 90 CACHE STRING "GPU architectures to compile for")
    endif()
    enable_language(CUDA)
    # CMake 3.25 knows nvcc's dialect flags only up to C++17 and would pass -std=c++17; teach it
    # the C++20 one so that CUDA_STANDARD 20 yields exactly one -std=c++20.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(MOEFOLD_HAVE_CUDA ON)
    find_library(MOEFOLD_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_path(MOEFOLD_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(MOEFOLD_NCCL_LIB AND MOEFOLD_NCCL_INCLUDE AND NOT MOEFOLD_NCCL STREQUAL "OFF")
      set(MOEFOLD_HAVE_NCCL ON)
    endif()
  elseif(MOEFOLD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOEFOLD_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "moefold: CUDA backend ${MOEFOLD_HAVE_CUDA}, NCCL ${MOEFOLD_HAVE_NCCL} "
               "(MOEFOLD_CUDA=${MOEFOLD_CUDA}, architectures ${CMAKE_CUDA_ARCHITECTURES})")

# One library per folder; sources are globbed so adding a file needs no CMake edit.
# A folder with no sources yet is an INTERFACE library so dependents still link.
function(moefold_add_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(sources)
    add_library(${name} STATIC ${sources})
    target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# SentencePiece (libsentencepiece-dev) for `tokenizer_type: sentencepiece`; Debian ships no CMake
# package for it.
find_path(MOEFOLD_SENTENCEPIECE_INCLUDE sentencepiece_processor.h REQUIRED)
find_library(MOEFOLD_SENTENCEPIECE_LIB sentencepiece REQUIRED)
find_library(MOEFOLD_SENTENCEPIECE_TRAIN_LIB sentencepiece_train REQUIRED)
add_library(moefold_sentencepiece INTERFACE)
target_include_directories(moefold_sentencepiece SYSTEM INTERFACE ${MOEFOLD_SENTENCEPIECE_INCLUDE})
target_link_libraries(moefold_sentencepiece INTERFACE ${MOEFOLD_SENTENCEPIECE_LIB})
