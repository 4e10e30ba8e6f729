#include "sidecar.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace vitdeploy_demo {
namespace {

using nlohmann::json;

const json& field(const json& object, const char* key, const std::string& where) {
    if (!object.is_object() || !object.contains(key))
        throw Error(where + " has no '" + key + "' field: expected a vitdeploy pyramid description");
    return object.at(key);
}

template <typename T>
T get(const json& object, const char* key, const std::string& where) {
    try {
        return field(object, key, where).get<T>();
    } catch (const json::exception&) {
        throw Error(where + ": field '" + key + "' has the wrong type (" + object.at(key).dump() + ")");
    }
}

InputSpec parse_input(const json& input, const std::string& where) {
    const std::string at = where + " input";
    InputSpec spec;
    spec.name = get<std::string>(input, "name", at);
    spec.mode = get<std::string>(input, "mode", at);
    spec.channels = get<int>(input, "channels", at);
    spec.size_multiple = get<int>(input, "size_multiple", at);
    spec.min_hw = get<std::array<int, 2>>(input, "min_hw", at);
    spec.max_hw = get<std::array<int, 2>>(input, "max_hw", at);
    const json& batch = field(input, "batch", at);
    spec.batch_min = get<int>(batch, "min", at + " batch");
    spec.batch_max = get<int>(batch, "max", at + " batch");
    // JSON numbers are doubles; rounding them to float matches numpy's float32 cast in Python.
    const auto mean = get<std::array<double, 3>>(input, "mean", at);
    const auto std_dev = get<std::array<double, 3>>(input, "std", at);
    for (int c = 0; c < 3; ++c) {
        spec.mean[c] = static_cast<float>(mean[c]);
        spec.std[c] = static_cast<float>(std_dev[c]);
    }
    spec.pixel_scale = static_cast<float>(get<double>(input, "pixel_scale", at));
    // Optional: descriptions written before --bake-preprocessing existed lack it.
    if (input.contains("normalised_in_graph")) spec.normalised_in_graph = get<bool>(input, "normalised_in_graph", at);
    const std::string layout = get<std::string>(input, "layout", at), dtype = get<std::string>(input, "dtype", at);
    if (layout != spec.layout() || dtype != spec.dtype() || spec.channels != 3)
        throw Error(at + " is " + dtype + " " + layout + ", " + std::to_string(spec.channels) +
                    " channels, normalised_in_graph " + (spec.normalised_in_graph ? "true" : "false") +
                    ": expected float32 NCHW (normalised_in_graph false) or uint8 NHWC (normalised_in_graph "
                    "true), 3 channels");
    if (spec.mode != "fixed" && spec.mode != "dynamic")
        throw Error(at + " mode '" + spec.mode + "': expected 'fixed' or 'dynamic'");
    if (spec.size_multiple < 1 || spec.pixel_scale <= 0.0f || spec.std[0] <= 0.0f || spec.std[1] <= 0.0f ||
        spec.std[2] <= 0.0f)
        throw Error(at + ": size_multiple, pixel_scale and std must be positive");
    if (spec.min_hw[0] < 1 || spec.min_hw[1] < 1 || spec.min_hw[0] > spec.max_hw[0] || spec.min_hw[1] > spec.max_hw[1])
        throw Error(at + ": min_hw must be positive and not above max_hw");
    return spec;
}

OutputSpec parse_output(const json& output, const std::string& where) {
    OutputSpec spec;
    spec.name = get<std::string>(output, "name", where + " output");
    const std::string at = where + " output '" + spec.name + "'";
    spec.kind = get<std::string>(output, "kind", at);
    spec.layout = get<std::string>(output, "layout", at);
    spec.channels = get<int>(output, "channels", at);
    if (spec.kind == "feature") {
        spec.stride = get<int>(output, "stride", at);
        if (spec.layout != "NCHW" || spec.stride < 1)
            throw Error(at + " is a feature: expected layout NCHW and a positive stride");
    } else if (spec.kind == "embedding") {
        if (spec.layout != "NC") throw Error(at + " is an embedding: expected layout NC");
    } else {
        throw Error(at + " has kind '" + spec.kind + "': expected 'feature' or 'embedding'");
    }
    return spec;
}

EngineSpec parse_engine(const json& engine, const InputSpec& input, const std::string& where) {
    const std::string at = where + " engine";
    EngineSpec spec;
    spec.file = get<std::string>(engine, "file", at);
    spec.backend = get<std::string>(engine, "backend", at);
    spec.backend_version = get<std::string>(engine, "backend_version", at);
    spec.precision = get<std::string>(engine, "precision", at);
    spec.size_bytes = get<int64_t>(engine, "size_bytes", at);
    const json& profile = field(field(engine, "profile", at), input.name.c_str(), at + " profile");
    spec.profile_min = get<std::vector<int64_t>>(profile, "min", at + " profile");
    spec.profile_max = get<std::vector<int64_t>>(profile, "max", at + " profile");
    const size_t channel_axis = input.normalised_in_graph ? 3 : 1;
    for (const auto& shape : {spec.profile_min, spec.profile_max})
        if (shape.size() != 4 || shape[channel_axis] != input.channels)
            throw Error(at + " profile: expected " + input.layout() + " min and max shapes of 4 dimensions with " +
                        std::to_string(input.channels) + " channels, as the input's layout puts them");
    return spec;
}

}  // namespace

Sidecar parse_sidecar(const std::string& json_text, const std::string& where) {
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::parse_error& exc) {
        throw Error(where + " is not valid JSON (syntax error at byte " + std::to_string(exc.byte) + ")");
    }
    if (get<std::string>(root, "format", where) != "vitdeploy.pyramid" || get<int>(root, "format_version", where) != 1)
        throw Error(where + " is not format vitdeploy.pyramid version 1: expected a vitdeploy description");
    Sidecar sidecar;
    sidecar.recipe = get<std::string>(root, "recipe", where);
    sidecar.input = parse_input(field(root, "input", where), where);
    const json& outputs = field(root, "outputs", where);
    if (!outputs.is_array() || outputs.empty()) throw Error(where + ": 'outputs' must be a non-empty list");
    for (const json& output : outputs) sidecar.outputs.push_back(parse_output(output, where));
    if (root.contains("engine")) sidecar.engine = parse_engine(root.at("engine"), sidecar.input, where);
    return sidecar;
}

Sidecar load_sidecar(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path + ": expected a vitdeploy JSON description");
    std::ostringstream text;
    text << file.rdbuf();
    return parse_sidecar(text.str(), path);
}

std::array<int, 2> shape_hw(const InputSpec& input, const std::vector<int64_t>& shape) {
    const size_t height_axis = input.normalised_in_graph ? 1 : 2;
    return {static_cast<int>(shape.at(height_axis)), static_cast<int>(shape.at(height_axis + 1))};
}

std::vector<int64_t> output_shape(const OutputSpec& output, int64_t batch, int64_t height, int64_t width) {
    if (output.kind == "embedding") return {batch, output.channels};
    return {batch, output.channels, height / output.stride, width / output.stride};
}

}  // namespace vitdeploy_demo
