# Finds libtorch in the torch wheel of the `python3` on PATH (or TORCH_PYTHON) and, when found, compiles the
# AOTInductor runtime into vitdeploy_demo and adds the ctest aoti_runtime. Not find_package(Torch): the CUDA
# wheels' TorchConfig.cmake insists on a CUDA toolkit, which running a CPU package does not need; the wheel's
# headers and its CPU libraries are all the runtime links.
set(TORCH_PYTHON python3 CACHE STRING "Python whose torch wheel provides libtorch for the AOTInductor runtime")
execute_process(
  COMMAND ${TORCH_PYTHON} -c "import torch, torch.utils.cpp_extension as c; print(';'.join(c.include_paths())); print(c.library_paths()[0]); print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(torch.__version__.split('+')[0])"
  OUTPUT_VARIABLE _torch_facts OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _no_torch)

if(_no_torch EQUAL 0)
  string(REPLACE "\n" ";" _torch_facts "${_torch_facts}")
  list(POP_FRONT _torch_facts _torch_include_a _torch_include_b _torch_lib _torch_abi _torch_version)
  find_library(_torch_cpu torch_cpu PATHS ${_torch_lib} NO_DEFAULT_PATH)
  find_library(_torch_c10 c10 PATHS ${_torch_lib} NO_DEFAULT_PATH)
  find_library(_torch torch PATHS ${_torch_lib} NO_DEFAULT_PATH)
endif()

if(_torch_cpu AND _torch_c10 AND _torch)
  # libtorch's headers need C++20; the rest of the demo stays C++17, so the runtime is a library of its own.
  add_library(vitdeploy_demo_aoti STATIC src/aoti_runtime.cpp)
  set_target_properties(vitdeploy_demo_aoti PROPERTIES CXX_STANDARD 20)
  target_include_directories(vitdeploy_demo_aoti SYSTEM PRIVATE ${_torch_include_a} ${_torch_include_b})
  target_compile_definitions(vitdeploy_demo_aoti PRIVATE _GLIBCXX_USE_CXX11_ABI=${_torch_abi})
  # libtorch.so itself is linked (kept, though nothing here calls it) because a package's kernels library needs it
  # and, dlopen'ed from the wheel's temporary extraction, finds it only among the libraries already loaded.
  target_link_libraries(vitdeploy_demo_aoti PRIVATE vitdeploy_demo_core
                        PUBLIC ${_torch_cpu} ${_torch_c10} -Wl,--no-as-needed ${_torch})
  target_compile_definitions(vitdeploy_demo_runtimes PRIVATE VITDEPLOY_WITH_AOTI)
  target_link_libraries(vitdeploy_demo_runtimes PUBLIC vitdeploy_demo_aoti)
  set(CMAKE_BUILD_RPATH ${CMAKE_BUILD_RPATH} ${_torch_lib})
  list(APPEND VITDEPLOY_RUNTIMES aoti)
  message(STATUS "vitdeploy_demo: AOTInductor runtime: found libtorch ${_torch_version} (${_torch_lib})")
  # A tiny package compiled by this torch (tests/make_aoti_package.py), then loaded and run by the demo's runtime.
  add_test(NAME aoti_package COMMAND ${TORCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tests/make_aoti_package.py
           ${CMAKE_CURRENT_BINARY_DIR}/test_aoti_tmp)
  set_tests_properties(aoti_package PROPERTIES FIXTURES_SETUP aoti_package)
  add_executable(test_aoti tests/test_aoti.cpp)
  target_link_libraries(test_aoti PRIVATE vitdeploy_demo_runtimes)
  add_test(NAME aoti_runtime COMMAND test_aoti WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(aoti_runtime PROPERTIES FIXTURES_REQUIRED aoti_package)
else()
  message(STATUS "vitdeploy_demo: AOTInductor runtime: not found (no torch in ${TORCH_PYTHON}: pip install torch, or "
                 "-DTORCH_PYTHON=<python with torch>)")
endif()
