#include "description.hpp"

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {
namespace {

// Ordered: `files` keeps the order the description lists it in.
using json = nlohmann::ordered_json;

const std::set<std::string> kBackends = {"openvino", "tensorrt", "tensorrt_rtx"};

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
    if (spec.kind == "feature" || spec.kind == "position") {
        spec.stride = get<int>(output, "stride", at);
        if (spec.layout != "NCHW" || spec.stride < 1)
            throw Error(at + " is a " + (spec.kind == "feature" ? "feature" : "position encoding") +
                        ": expected layout NCHW and a positive stride");
    } else if (spec.kind == "embedding") {
        if (spec.layout != "NC") throw Error(at + " is an embedding: expected layout NC");
    } else {
        throw Error(at + " has kind '" + spec.kind + "': expected 'feature', 'position' or 'embedding'");
    }
    return spec;
}

TensorSpec parse_tensor(const json& io, const std::string& name, const std::string& where) {
    const std::string at = where + " io '" + name + "'";
    const json& tensor = field(io, name.c_str(), where + " io");
    return {name, get<std::string>(tensor, "mode", at), get<std::string>(tensor, "dtype", at),
            get<std::vector<int64_t>>(tensor, "shape", at)};
}

// The built model's tensors: exactly the description's input and outputs, with their dtypes, and the input's
// static dimensions where the profile fixes them.
std::vector<TensorSpec> parse_io(const json& engine, const InputSpec& input, const std::vector<OutputSpec>& outputs,
                                 const std::vector<int64_t>& profile_min, const std::vector<int64_t>& profile_max,
                                 const std::string& at) {
    const json& io = field(engine, "io", at);
    if (!io.is_object() || io.size() != outputs.size() + 1)
        throw Error(at + " io has " + std::to_string(io.size()) + " tensors: expected the input '" + input.name +
                    "' and the " + std::to_string(outputs.size()) + " outputs the description lists");
    std::vector<TensorSpec> tensors{parse_tensor(io, input.name, at)};
    for (const OutputSpec& output : outputs) tensors.push_back(parse_tensor(io, output.name, at));
    for (const TensorSpec& t : tensors) {
        const bool is_input = &t == &tensors.front();
        const std::string mode = is_input ? "input" : "output", dtype = is_input ? input.dtype() : "float32";
        const size_t rank = is_input ? 4 : t.shape.size();
        if (t.mode != mode || t.dtype != dtype || t.shape.size() != rank)
            throw Error(at + " io '" + t.name + "' is a " + t.dtype + " " + t.mode + " of " +
                        std::to_string(t.shape.size()) + " dimensions: expected a " + dtype + " " + mode +
                        (is_input ? " of 4 dimensions" : ""));
    }
    const std::vector<int64_t>& shape = tensors.front().shape;
    for (size_t i = 0; i < shape.size(); ++i)
        if (shape[i] != -1 && (profile_min[i] != shape[i] || profile_max[i] != shape[i]))
            throw Error(at + ": input '" + input.name + "' is " + shape_string(shape) + " but the profile spans " +
                        shape_string(profile_min) + ".." + shape_string(profile_max) +
                        ": expected the profile to keep its static dimensions");
    return tensors;
}

std::vector<EngineFile> parse_files(const json& engine, const std::string& file, const std::string& at) {
    const json& files = field(engine, "files", at);
    if (!files.is_object() || files.empty()) throw Error(at + ": 'files' must be a non-empty map of file name to "
                                                         "size_bytes and sha256");
    std::vector<EngineFile> result;
    for (const auto& [name, entry] : files.items()) {
        const std::string where = at + " files '" + name + "'";
        EngineFile spec{name, get<int64_t>(entry, "size_bytes", where), get<std::string>(entry, "sha256", where)};
        const bool hex = spec.sha256.size() == 64 &&
                         std::all_of(spec.sha256.begin(), spec.sha256.end(), [](char c) {
                             return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                         });
        // Names are plain file names beside the engine, never paths.
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
            spec.size_bytes < 0 || !hex)
            throw Error(where + ": expected a file name beside the engine, size_bytes >= 0 and a sha256 of 64 "
                                "lower-case hex digits");
        result.push_back(spec);
    }
    if (std::none_of(result.begin(), result.end(), [&](const EngineFile& f) { return f.name == file; }))
        throw Error(at + ": 'files' does not list the engine file " + file + ": expected it among them");
    return result;
}

EngineSpec parse_engine(const json& engine, const InputSpec& input, const std::vector<OutputSpec>& outputs,
                        const std::string& where) {
    const std::string at = where + " engine";
    EngineSpec spec;
    spec.file = get<std::string>(engine, "file", at);
    spec.backend = get<std::string>(engine, "backend", at);
    spec.backend_version = get<std::string>(engine, "backend_version", at);
    spec.precision = get<std::string>(engine, "precision", at);
    spec.device = get<std::string>(engine, "device", at);
    if (!kBackends.count(spec.backend))
        throw Error(at + " backend '" + spec.backend + "' is unknown: expected openvino, tensorrt or tensorrt_rtx");
    if (spec.backend == "openvino") {
        spec.inference_precision = get<std::string>(engine, "inference_precision", at);
        if (spec.inference_precision != "f32" && spec.inference_precision != "bf16")
            throw Error(at + " inference_precision '" + spec.inference_precision + "': expected f32 or bf16");
    } else if (engine.contains("compute_capability") && !engine.at("compute_capability").is_null()) {
        spec.compute_capability = get<std::string>(engine, "compute_capability", at);
    }
    const json& profile = field(field(engine, "profile", at), input.name.c_str(), at + " profile");
    spec.profile_min = get<std::vector<int64_t>>(profile, "min", at + " profile");
    spec.profile_max = get<std::vector<int64_t>>(profile, "max", at + " profile");
    const size_t channel_axis = input.normalised_in_graph ? 3 : 1;
    for (const auto& shape : {spec.profile_min, spec.profile_max})
        if (shape.size() != 4 || shape[channel_axis] != input.channels)
            throw Error(at + " profile: expected " + input.layout() + " min and max shapes of 4 dimensions with " +
                        std::to_string(input.channels) + " channels, as the input's layout puts them");
    spec.io = parse_io(engine, input, outputs, spec.profile_min, spec.profile_max, at);
    spec.files = parse_files(engine, spec.file, at);
    return spec;
}

}  // namespace

Description parse_description(const std::string& json_text, const std::string& where) {
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::parse_error& exc) {
        throw Error(where + " is not valid JSON (syntax error at byte " + std::to_string(exc.byte) + ")");
    }
    if (get<std::string>(root, "format", where) != "vitdeploy.pyramid")
        throw Error(where + " is not a vitdeploy.pyramid description: expected a vitdeploy.json or engine description");
    const int version = get<int>(root, "format_version", where);
    if (version != kFormatVersion)
        throw Error(where + " is format_version " + std::to_string(version) + ": this demo reads version " +
                    std::to_string(kFormatVersion) + "; re-export the artifact (and rebuild its engines) with a "
                    "current vitdeploy");
    Description description;
    description.recipe = get<std::string>(root, "recipe", where);
    description.input = parse_input(field(root, "input", where), where);
    const json& outputs = field(root, "outputs", where);
    if (!outputs.is_array() || outputs.empty()) throw Error(where + ": 'outputs' must be a non-empty list");
    for (const json& output : outputs) description.outputs.push_back(parse_output(output, where));
    if (root.contains("engine"))
        description.engine = parse_engine(root.at("engine"), description.input, description.outputs, where);
    return description;
}

Description load_description(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path + ": expected a vitdeploy JSON description");
    std::ostringstream text;
    text << file.rdbuf();
    return parse_description(text.str(), path);
}

const TensorSpec& EngineSpec::tensor(const std::string& name) const {
    for (const TensorSpec& t : io)
        if (t.name == name) return t;
    throw Error("the engine description has no tensor '" + name + "'");
}

std::vector<int> version_numbers(const std::string& version, const std::string& what) {
    std::smatch match;
    if (!std::regex_search(version, match, std::regex("^([0-9]+)\\.([0-9]+)\\.([0-9]+)")))
        throw Error(what + " version '" + version + "' does not start with X.Y.Z: expected e.g. 2026.4.1");
    return {std::stoi(match[1]), std::stoi(match[2]), std::stoi(match[3])};
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
