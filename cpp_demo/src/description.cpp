#include "description.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {
namespace {

// Ordered: `files` keeps the order the description lists it in.
using json = nlohmann::ordered_json;

const std::set<std::string> kBackends = {"aoti", "openvino", "tensorrt", "tensorrt_rtx"};

// The bounds vitdeploy/description_rules.py applies: a description is untrusted input (docs/security.md).
constexpr size_t kMaxBytes = 16u << 20;
constexpr int kMaxDepth = 32;
constexpr int64_t kMaxSide = 16384, kMaxBatch = 4096, kMaxChannels = 65536, kMaxStride = 4096, kMaxOutputs = 256;
constexpr int64_t kMaxFileBytes = int64_t{1} << 44, kMaxDim = (int64_t{1} << 31) - 1;

// Objects and lists nested deeper than kMaxDepth are refused before parsing (nlohmann recurses while it builds
// and destroys values).
void check_depth(const std::string& text, const std::string& where) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxDepth)
                throw Error(where + " nests objects and lists more than " + std::to_string(kMaxDepth) +
                            " deep: expected a vitdeploy description");
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
}

// A file or tensor name usable as a plain file name: 1 to 128 of [A-Za-z0-9_.+-], not starting with a dot.
bool safe_name(const std::string& name) {
    static const std::regex pattern("[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}");
    return std::regex_match(name, pattern);
}

void check_name(const std::string& name, const std::string& what) {
    if (!safe_name(name))
        throw Error(what + " '" + name.substr(0, 60) + "' is not a plain name: expected 1 to 128 letters, digits "
                    "and _.+- not starting with a dot (no path)");
}

const json& field(const json& object, const char* key, const std::string& where) {
    if (!object.is_object() || !object.contains(key))
        throw Error(where + " has no '" + key + "' field: expected a vitdeploy pyramid description");
    return object.at(key);
}

template <typename T>
T get(const json& object, const char* key, const std::string& where) {
    const json& value = field(object, key, where);
    const Error wrong(where + ": field '" + key + "' has the wrong type (" + value.dump().substr(0, 60) + ")");
    // nlohmann converts booleans to numbers silently: a number field must hold a JSON number.
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
        if (!value.is_number()) throw wrong;
    try {
        return value.get<T>();
    } catch (const json::exception&) {
        throw wrong;
    }
}

// An integer field within low..high (a float, a boolean or a number out of range is refused, never cast).
int64_t integer(const json& value, const std::string& what, int64_t low, int64_t high) {
    if (!value.is_number_integer() || (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(high)) ||
        value.get<int64_t>() < low || value.get<int64_t>() > high)
        throw Error(what + " is " + value.dump().substr(0, 40) + ": expected an integer " + std::to_string(low) +
                    ".." + std::to_string(high));
    return value.get<int64_t>();
}

int64_t integer(const json& object, const char* key, const std::string& where, int64_t low, int64_t high) {
    return integer(field(object, key, where), where + " " + key, low, high);
}

std::vector<int64_t> dims(const json& object, const char* key, const std::string& where, int64_t low) {
    const json& value = field(object, key, where);
    if (!value.is_array() || value.size() > 8)
        throw Error(where + " " + key + " is " + value.dump().substr(0, 40) + ": expected a list of up to 8 integers");
    std::vector<int64_t> result;
    for (const json& d : value) result.push_back(integer(d, where + " " + key, low, kMaxDim));
    return result;
}

std::array<int, 2> hw(const json& object, const char* key, const std::string& where) {
    const std::vector<int64_t> sides = dims(object, key, where, 1);
    if (sides.size() != 2 || sides[0] > kMaxSide || sides[1] > kMaxSide)
        throw Error(where + " " + key + ": expected [height, width], each 1.." + std::to_string(kMaxSide));
    return {static_cast<int>(sides[0]), static_cast<int>(sides[1])};
}

InputSpec parse_input(const json& input, const std::string& where) {
    const std::string at = where + " input";
    InputSpec spec;
    spec.name = get<std::string>(input, "name", at);
    check_name(spec.name, at + " name");
    spec.mode = get<std::string>(input, "mode", at);
    spec.channels = static_cast<int>(integer(input, "channels", at, 1, 64));
    spec.size_multiple = static_cast<int>(integer(input, "size_multiple", at, 1, kMaxSide));
    spec.min_hw = hw(input, "min_hw", at);
    spec.max_hw = hw(input, "max_hw", at);
    const json& batch = field(input, "batch", at);
    spec.batch_min = static_cast<int>(integer(batch, "min", at + " batch", 1, kMaxBatch));
    spec.batch_max = static_cast<int>(integer(batch, "max", at + " batch", spec.batch_min, kMaxBatch));
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
    for (int c = 0; c < 3; ++c)
        if (!std::isfinite(spec.mean[c]) || !std::isfinite(spec.std[c]) || !(spec.std[c] > 0.0f))
            throw Error(at + ": mean and std must be finite and std positive");
    if (!std::isfinite(spec.pixel_scale) || !(spec.pixel_scale > 0.0f))
        throw Error(at + ": pixel_scale must be positive and finite");
    if (spec.min_hw[0] < 1 || spec.min_hw[1] < 1 || spec.min_hw[0] > spec.max_hw[0] || spec.min_hw[1] > spec.max_hw[1])
        throw Error(at + ": min_hw must be positive and not above max_hw");
    return spec;
}

OutputSpec parse_output(const json& output, const std::string& where) {
    OutputSpec spec;
    spec.name = get<std::string>(output, "name", where + " output");
    check_name(spec.name, where + " output name");
    const std::string at = where + " output '" + spec.name + "'";
    spec.kind = get<std::string>(output, "kind", at);
    spec.layout = get<std::string>(output, "layout", at);
    spec.channels = static_cast<int>(integer(output, "channels", at, 1, kMaxChannels));
    if (spec.kind == "feature" || spec.kind == "position") {
        spec.stride = static_cast<int>(integer(output, "stride", at, 1, kMaxStride));
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
            dims(tensor, "shape", at, -1)};
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
        EngineFile spec{name, integer(entry, "size_bytes", where, 0, kMaxFileBytes),
                        get<std::string>(entry, "sha256", where)};
        const bool hex = spec.sha256.size() == 64 &&
                         std::all_of(spec.sha256.begin(), spec.sha256.end(), [](char c) {
                             return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                         });
        // Names are plain file names beside the engine, never paths.
        if (!safe_name(name) || !hex)
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
    check_name(spec.file, at + " file");
    spec.backend = get<std::string>(engine, "backend", at);
    spec.backend_version = get<std::string>(engine, "backend_version", at);
    spec.precision = get<std::string>(engine, "precision", at);
    spec.device = get<std::string>(engine, "device", at);
    if (!kBackends.count(spec.backend))
        throw Error(at + " backend '" + spec.backend + "' is unknown: expected aoti, openvino, tensorrt or tensorrt_rtx");
    if (spec.backend == "openvino") {
        spec.inference_precision = get<std::string>(engine, "inference_precision", at);
        if (spec.inference_precision != "f32" && spec.inference_precision != "bf16")
            throw Error(at + " inference_precision '" + spec.inference_precision + "': expected f32 or bf16");
    } else if (engine.contains("compute_capability") && !engine.at("compute_capability").is_null()) {
        spec.compute_capability = get<std::string>(engine, "compute_capability", at);
    }
    const json& profile = field(field(engine, "profile", at), input.name.c_str(), at + " profile");
    spec.profile_min = dims(profile, "min", at + " profile", 0);
    spec.profile_max = dims(profile, "max", at + " profile", 0);
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
    if (json_text.size() > kMaxBytes)
        throw Error(where + " is " + std::to_string(json_text.size()) + " bytes: expected a description of at most " +
                    std::to_string(kMaxBytes) + " bytes");
    check_depth(json_text, where);
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::parse_error& exc) {
        throw Error(where + " is not valid JSON (syntax error at byte " + std::to_string(exc.byte) + ")");
    } catch (const json::exception&) {  // out_of_range: a number too large for a double
        throw Error(where + " is not valid JSON (a number out of range)");
    }
    if (get<std::string>(root, "format", where) != "vitdeploy.pyramid")
        throw Error(where + " is not a vitdeploy.pyramid description: expected a vitdeploy.json or engine description");
    const int version = static_cast<int>(integer(root, "format_version", where, 0, 1000000));
    if (version != kFormatVersion)
        throw Error(where + " is format_version " + std::to_string(version) + ": this demo reads version " +
                    std::to_string(kFormatVersion) + "; re-export the artifact (and rebuild its engines) with a "
                    "current vitdeploy");
    Description description;
    description.recipe = get<std::string>(root, "recipe", where);
    description.input = parse_input(field(root, "input", where), where);
    const json& outputs = field(root, "outputs", where);
    if (!outputs.is_array() || outputs.empty() || outputs.size() > kMaxOutputs)
        throw Error(where + ": 'outputs' must be a list of 1.." + std::to_string(kMaxOutputs) + " outputs");
    for (const json& output : outputs) description.outputs.push_back(parse_output(output, where));
    if (root.contains("engine"))
        description.engine = parse_engine(root.at("engine"), description.input, description.outputs, where);
    return description;
}

Description load_description(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path + ": expected a vitdeploy JSON description");
    std::string text(kMaxBytes + 1, '\0');  // at most one byte more than a description may hold
    file.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(file.gcount()));
    return parse_description(text, path);
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
