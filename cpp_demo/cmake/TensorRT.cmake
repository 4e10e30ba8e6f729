# Finds TensorRT or TensorRT-RTX plus the CUDA runtime and, when all are there, compiles the TensorRT runtime
# into vitdeploy_demo. TENSORRT_ROOT is searched for include/NvInfer.h and the library; headers and library in
# different places (a pip wheel has no headers) are given as -DTENSORRT_INCLUDE_DIR=... -DTENSORRT_LIBRARY=...
# VITDEPLOY_TRT_SYNTAX_CHECK=ON adds the ctest trt_demo_syntax, which compiles src/tensorrt_runtime.cpp with
# -fsyntax-only against the headers alone (TensorRT's headers and the CUDA toolkit; no library, no GPU).
set(TENSORRT_ROOT "$ENV{TENSORRT_ROOT}" CACHE PATH "TensorRT or TensorRT-RTX prefix (include/NvInfer.h, lib/)")
option(VITDEPLOY_TRT_SYNTAX_CHECK "Add a ctest compiling the TensorRT runtime with -fsyntax-only" OFF)

find_path(TENSORRT_INCLUDE_DIR NvInfer.h HINTS ${TENSORRT_ROOT} PATH_SUFFIXES include)
# The versioned names find the libraries of the pip wheels (tensorrt_libs/, tensorrt_rtx_libs/).
find_library(TENSORRT_LIBRARY NAMES nvinfer tensorrt_rtx libnvinfer.so.11 libnvinfer.so.10 libtensorrt_rtx.so.1
             HINTS ${TENSORRT_ROOT} PATH_SUFFIXES lib lib64)
find_package(CUDAToolkit QUIET)

if(TENSORRT_LIBRARY MATCHES "tensorrt_rtx")
  set(VITDEPLOY_TRT_BACKEND tensorrt_rtx)
else()
  set(VITDEPLOY_TRT_BACKEND tensorrt)
endif()

if(TENSORRT_INCLUDE_DIR AND TENSORRT_LIBRARY AND CUDAToolkit_FOUND)
  target_sources(vitdeploy_demo_runtimes PRIVATE src/tensorrt_runtime.cpp)
  target_include_directories(vitdeploy_demo_runtimes SYSTEM PRIVATE ${TENSORRT_INCLUDE_DIR})
  target_link_libraries(vitdeploy_demo_runtimes PUBLIC ${TENSORRT_LIBRARY} CUDA::cudart)
  target_compile_definitions(vitdeploy_demo_runtimes PRIVATE VITDEPLOY_WITH_TENSORRT
                             VITDEPLOY_TRT_BACKEND="${VITDEPLOY_TRT_BACKEND}")
  list(APPEND VITDEPLOY_RUNTIMES ${VITDEPLOY_TRT_BACKEND})
  message(STATUS "vitdeploy_demo: TensorRT runtime: found ${VITDEPLOY_TRT_BACKEND} (${TENSORRT_LIBRARY})")
else()
  message(STATUS "vitdeploy_demo: TensorRT runtime: not found (headers: ${TENSORRT_INCLUDE_DIR}, library: "
                 "${TENSORRT_LIBRARY}, CUDA toolkit found: ${CUDAToolkit_FOUND}); point at it with "
                 "-DTENSORRT_ROOT=<TensorRT or TensorRT-RTX install> "
                 "(or -DTENSORRT_INCLUDE_DIR= and -DTENSORRT_LIBRARY=)")
endif()

if(VITDEPLOY_TRT_SYNTAX_CHECK)
  if(NOT TENSORRT_INCLUDE_DIR OR NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "VITDEPLOY_TRT_SYNTAX_CHECK needs NvInfer.h (set TENSORRT_ROOT) and the CUDA toolkit headers")
  endif()
  file(READ "${TENSORRT_INCLUDE_DIR}/NvInferVersion.h" _trt_header)
  set(_trt_version "")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX MATCH "define TRT_${_part}_[A-Z]+ +([0-9]+)" _match "${_trt_header}")
    list(APPEND _trt_version "${CMAKE_MATCH_1}")
  endforeach()
  list(JOIN _trt_version "." _trt_version)
  message(STATUS "vitdeploy_demo: ctest trt_demo_syntax checks src/tensorrt_runtime.cpp against TensorRT "
                 "${_trt_version} headers in ${TENSORRT_INCLUDE_DIR}")
  list(TRANSFORM CUDAToolkit_INCLUDE_DIRS PREPEND "-isystem" OUTPUT_VARIABLE _cuda_includes)
  add_test(NAME trt_demo_syntax
    COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -Wall -Wextra -Werror
            -I${CMAKE_CURRENT_SOURCE_DIR}/src -isystem${TENSORRT_INCLUDE_DIR} ${_cuda_includes}
            -DVITDEPLOY_TRT_BACKEND=\"${VITDEPLOY_TRT_BACKEND}\" ${CMAKE_CURRENT_SOURCE_DIR}/src/tensorrt_runtime.cpp)
endif()
