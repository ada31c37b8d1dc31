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

# CUDA toolkit, NCCL and cuDNN come from the CUDA installation (no CMake targets for the last two).
set(MOEFOLD_HAVE_CUDA OFF)
if(NOT MOEFOLD_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    find_library(MOEFOLD_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_library(MOEFOLD_CUDNN_LIB cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
    if(MOEFOLD_NCCL_LIB AND MOEFOLD_CUDNN_LIB)
      set(MOEFOLD_HAVE_CUDA ON)
    elseif(MOEFOLD_CUDA STREQUAL "ON")
      message(FATAL_ERROR "MOEFOLD_CUDA=ON but NCCL ('${MOEFOLD_NCCL_LIB}') or cuDNN "
              "('${MOEFOLD_CUDNN_LIB}') was not found next to the CUDA toolkit")
    endif()
  elseif(MOEFOLD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOEFOLD_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
if(MOEFOLD_HAVE_CUDA)
  # CMake 3.25 does not know nvcc's C++20 dialect flag; pass it by hand.
  set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -std=c++20")
  if(NOT CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "52")
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
endif()
message(STATUS "moefold: CUDA backend ${MOEFOLD_HAVE_CUDA} (MOEFOLD_CUDA=${MOEFOLD_CUDA})")

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
