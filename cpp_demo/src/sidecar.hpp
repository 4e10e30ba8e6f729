// The pyramid description (vitdeploy.json or an engine's .engine.json): see docs/ARTIFACT_FORMAT.md.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vitdeploy_demo {

struct InputSpec {
    std::string name;
    std::string mode;  // "fixed" or "dynamic"
    // true (--bake-preprocessing): raw uint8 NHWC pixels, normalised by the graph; false: normalised float32 NCHW.
    bool normalised_in_graph = false;
    int channels = 3;
    int size_multiple = 1;
    std::array<int, 2> min_hw{};
    std::array<int, 2> max_hw{};
    int batch_min = 1;
    int batch_max = 1;
    std::array<float, 3> mean{};
    std::array<float, 3> std{};
    float pixel_scale = 255.0f;

    const char* layout() const { return normalised_in_graph ? "NHWC" : "NCHW"; }
    const char* dtype() const { return normalised_in_graph ? "uint8" : "float32"; }
};

struct OutputSpec {
    std::string name;
    std::string kind;    // "feature" or "embedding"
    std::string layout;  // "NCHW" or "NC"
    int channels = 0;
    int stride = 0;  // 0 for the embedding
};

struct EngineSpec {
    std::string file;
    std::string backend;  // "tensorrt" or "tensorrt_rtx"
    std::string backend_version;
    std::string precision;
    std::vector<int64_t> profile_min;  // shapes of the input's optimisation profile, in the input's layout
    std::vector<int64_t> profile_max;
    int64_t size_bytes = 0;
};

struct Sidecar {
    std::string recipe;
    InputSpec input;
    std::vector<OutputSpec> outputs;
    std::optional<EngineSpec> engine;  // present in engine sidecars only
};

// Parse and check a description; `where` names its source in error messages.
Sidecar parse_sidecar(const std::string& json_text, const std::string& where);
Sidecar load_sidecar(const std::string& path);

// (height, width) of an input batch shape in the input's layout.
std::array<int, 2> shape_hw(const InputSpec& input, const std::vector<int64_t>& shape);

// The shape an output has for a batch of `batch` images of height x width.
std::vector<int64_t> output_shape(const OutputSpec& output, int64_t batch, int64_t height, int64_t width);

}  // namespace vitdeploy_demo
