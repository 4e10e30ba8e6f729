// The pyramid description (vitdeploy.json, or an engine's description ENGINE.json), format_version 2:
// see docs/ARTIFACT_FORMAT.md.
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
    std::string kind;    // "feature", "position" (a level's position encoding, SAM2) or "embedding"
    std::string layout;  // "NCHW" or "NC"
    int channels = 0;
    int stride = 0;  // 0 for the embedding
};

// One file an engine consists of (a TensorRT engine; an OpenVINO IR's .xml and .bin), beside the engine.
struct EngineFile {
    std::string name;
    int64_t size_bytes = 0;
    std::string sha256;  // lower-case hex
};

// One tensor of the built model as `vitdeploy build` recorded it; -1 is a dynamic dimension.
struct TensorSpec {
    std::string name;
    std::string mode;   // "input" or "output"
    std::string dtype;  // "float32" or "uint8"
    std::vector<int64_t> shape;
};

struct EngineSpec {
    std::string file;     // the engine file the demo is given: the TensorRT engine or the OpenVINO .xml
    std::string backend;  // "tensorrt", "tensorrt_rtx", "openvino" or "aoti"
    std::string backend_version;
    std::string precision;
    std::string device;               // "cuda" (TensorRT, AOTInductor), an OpenVINO device ("CPU") or "cpu" (AOTI)
    std::string inference_precision;  // OpenVINO's inference_precision hint ("f32" or "bf16"); empty for TensorRT
    std::optional<std::string> compute_capability;  // TensorRT: the GPU it was built for; none = portable
    std::vector<int64_t> profile_min;  // shapes of the input's optimisation profile, in the input's layout
    std::vector<int64_t> profile_max;
    std::vector<TensorSpec> io;      // input first, then the outputs in pyramid order
    std::vector<EngineFile> files;   // in the description's order

    const TensorSpec& tensor(const std::string& name) const;
};

struct Description {
    std::string recipe;
    InputSpec input;
    std::vector<OutputSpec> outputs;
    std::optional<EngineSpec> engine;  // present in engine descriptions only
};

inline constexpr int kFormatVersion = 2;

// Parse and check a description; `where` names its source in error messages.
Description parse_description(const std::string& json_text, const std::string& where);
Description load_description(const std::string& path);

// "2026.4.1-22982-abc" -> {2026, 4, 1}: the leading X.Y.Z of a backend version; throws if there is none.
// `what` names the version in the error.
std::vector<int> version_numbers(const std::string& version, const std::string& what);

// (height, width) of an input batch shape in the input's layout.
std::array<int, 2> shape_hw(const InputSpec& input, const std::vector<int64_t>& shape);

// The shape an output has for a batch of `batch` images of height x width.
std::vector<int64_t> output_shape(const OutputSpec& output, int64_t batch, int64_t height, int64_t width);

}  // namespace vitdeploy_demo
