# Finds the OpenVINO runtime (for instance the one in the `openvino` pip wheel, which ships its headers and
# CMake package) and, when found, compiles the OpenVINO runtime into vitdeploy_demo and adds the ctest
# openvino_runtime. OpenVINO_DIR points at the package; without it, the `python3` on PATH is asked where its
# openvino wheel is (python3 -c 'import openvino').
if(NOT OpenVINO_DIR)
  # Not cached: the python on PATH is the one of the environment CMake runs in now (an activated venv).
  execute_process(
    COMMAND python3 -c "import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), 'cmake'))"
    OUTPUT_VARIABLE _openvino_wheel_cmake OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _no_wheel)
endif()
find_package(OpenVINO QUIET COMPONENTS Runtime HINTS ${_openvino_wheel_cmake})

if(OpenVINO_FOUND)
  target_sources(vitdeploy_demo_runtimes PRIVATE src/openvino_runtime.cpp)
  target_link_libraries(vitdeploy_demo_runtimes PUBLIC openvino::runtime)
  target_compile_definitions(vitdeploy_demo_runtimes PRIVATE VITDEPLOY_WITH_OPENVINO)
  list(APPEND VITDEPLOY_RUNTIMES openvino)
  message(STATUS "vitdeploy_demo: OpenVINO runtime: found ${OpenVINO_VERSION} (${OpenVINO_DIR})")
  add_executable(test_openvino tests/test_openvino.cpp)
  target_link_libraries(test_openvino PRIVATE vitdeploy_demo_runtimes)
  add_test(NAME openvino_runtime COMMAND test_openvino WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
else()
  message(STATUS "vitdeploy_demo: OpenVINO runtime: not found; point at it with -DOpenVINO_DIR=$(python -c "
                 "'import openvino, os; print(os.path.dirname(openvino.__file__))')/cmake (pip install openvino)")
endif()
