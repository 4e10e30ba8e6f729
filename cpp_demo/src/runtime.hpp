// The inference runtimes vitdeploy_demo can be built with, behind one interface. Which ones are compiled in
// is decided by CMake (VITDEPLOY_WITH_OPENVINO, VITDEPLOY_WITH_TENSORRT, VITDEPLOY_WITH_AOTI); the factory picks one by the engine
// description's `backend`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "description.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {

// A loaded engine, ready to run: its IO was checked against the description when it was opened.
class Runtime {
public:
    virtual ~Runtime() = default;
    // The outputs for one input batch, in the description's output order (fetched by name).
    virtual std::vector<Tensor> infer(const InputTensor& input) = 0;
};

// One runtime compiled into this program.
struct Backend {
    std::string name;     // the engine descriptions' `backend`: "openvino", "tensorrt", "tensorrt_rtx" or "aoti"
    std::string version;  // the runtime library's X.Y.Z
    std::string detail;   // the rest of `--version`'s line (build number, headers)
    // Throws if this runtime cannot load engines from `engine` (version), before anything is read.
    void (*check)(const EngineSpec& engine);
    // Loads `engine_path` (its files already checked) and checks its IO against the description.
    std::unique_ptr<Runtime> (*open)(const Description& description, const std::string& engine_path, bool verbose);
};

// The runtimes compiled in, in a fixed order (openvino, TensorRT, AOTInductor); may be empty.
const std::vector<Backend>& compiled_backends();

// The compiled-in runtime for the engine's backend, with its version checked; throws if there is none.
const Backend& backend_for(const EngineSpec& engine);

// One input of a graph with several (the SAM2 decoder: pyramid levels, prompt points and labels, a mask).
struct GraphInput {
    std::string name;
    std::vector<int64_t> shape;
    std::variant<std::vector<float>, std::vector<int32_t>> data;
};

// Runs an OpenVINO IR (or an ONNX file) on the CPU at `inference_precision` ("f32", "bf16") with `inputs`;
// returns the float32 `outputs`, by name, in that order. Without OpenVINO compiled in it throws.
std::vector<Tensor> run_openvino_graph(const std::string& path, const std::string& inference_precision,
                                       const std::vector<GraphInput>& inputs, const std::vector<std::string>& outputs);

// Each runtime's entry, defined in its own source file when CMake compiles that runtime in.
Backend openvino_backend();
Backend tensorrt_backend();
Backend aoti_backend();

}  // namespace vitdeploy_demo
