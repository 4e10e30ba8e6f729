// The OpenVINO runtime: reads the IR, checks its IO against the description, bounds its dynamic input to the
// engine's profile, compiles it for the description's device with its inference precision, and fetches
// every output by name.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "error.hpp"
#include "runtime.hpp"

namespace vitdeploy_demo {
namespace {

// OpenVINO's messages span lines ("Exception from src/...cpp:123:\n[ CPU ] what"): the lines that say what
// happened, joined, so our error stays one line.
std::string one_line(const std::string& message) {
    std::istringstream lines(message);
    std::string joined;
    for (std::string line; std::getline(lines, line);) {
        line.erase(0, line.find_first_not_of(" \t"));
        line.erase(line.find_last_not_of(" \t\r") + 1);
        if (line.empty() || line.rfind("Exception from ", 0) == 0) continue;
        joined += (joined.empty() ? "" : " ") + line;
    }
    return joined;
}

// Runs an OpenVINO call; its exception becomes one line saying what failed.
template <typename Call>
auto openvino(const std::string& what, Call&& call) {
    try {
        return call();
    } catch (const ov::Exception& exc) {
        throw Error("OpenVINO " + what + " failed: " + one_line(exc.what()));
    }
}

std::string version_string(const std::vector<int>& v) {
    return std::to_string(v[0]) + "." + std::to_string(v[1]) + "." + std::to_string(v[2]);
}

std::vector<int> runtime_version() {
    return version_numbers(ov::get_openvino_version().buildNumber, "this OpenVINO runtime's");
}

// An IR loads on the OpenVINO that wrote it and on newer ones, not on older ones.
void check_version(const EngineSpec& engine) {
    const std::vector<int> built = version_numbers(engine.backend_version, "the engine's OpenVINO");
    const std::vector<int> here = runtime_version();
    if (here < built)
        throw Error("the engine was built with OpenVINO " + engine.backend_version + " but this vitdeploy_demo runs "
                    "OpenVINO " + version_string(here) + ": expected " + version_string(built) + " or newer; "
                    "rebuild the engine with this OpenVINO or the demo against a newer one");
}

std::string dtype_name(const ov::element::Type& type) {
    if (type == ov::element::f32) return "float32";
    if (type == ov::element::u8) return "uint8";
    return type.get_type_name();
}

// Dimensions as the description records them: -1 where dynamic.
std::vector<int64_t> recorded_shape(const ov::PartialShape& shape) {
    if (shape.rank().is_dynamic()) return {};
    std::vector<int64_t> dims;
    for (const ov::Dimension& d : shape) dims.push_back(d.is_static() ? d.get_length() : -1);
    return dims;
}

// The port among `ports` carrying `name`, or nullptr.
using Ports = std::vector<ov::Output<const ov::Node>>;

const ov::Output<const ov::Node>* find_port(const Ports& ports, const std::string& name) {
    for (const auto& port : ports)
        if (port.get_names().count(name)) return &port;
    return nullptr;
}

std::string port_names(const Ports& ports) {
    std::string names;
    for (const auto& port : ports) names += (names.empty() ? "" : ", ") + port.get_any_name();
    return "[" + names + "]";
}

// The IR's inputs and outputs are the description's, by name, dtype and shape.
void check_io(const ov::Model& model, const Description& description, const std::string& file, const std::string& where) {
    const EngineSpec& engine = *description.engine;
    const auto inputs = model.inputs(), outputs = model.outputs();
    std::string expected_outputs;
    bool names_match = inputs.size() == 1 && outputs.size() == description.outputs.size() &&
                       find_port(inputs, description.input.name);
    for (const OutputSpec& output : description.outputs) {
        expected_outputs += (expected_outputs.empty() ? "" : ", ") + output.name;
        names_match = names_match && find_port(outputs, output.name);
    }
    if (!names_match)
        throw Error(file + " has inputs " + port_names(inputs) + " and outputs " + port_names(outputs) +
                    ": expected inputs [" + description.input.name + "] and outputs [" + expected_outputs + "] as " +
                    where + " says; the engine and its description do not belong together");
    for (const TensorSpec& tensor : engine.io) {
        const auto* port = find_port(tensor.mode == "input" ? inputs : outputs, tensor.name);
        const std::string dtype = dtype_name(port->get_element_type());
        const std::vector<int64_t> shape = recorded_shape(port->get_partial_shape());
        if (dtype != tensor.dtype || shape != tensor.shape)
            throw Error(file + " " + tensor.mode + " '" + tensor.name + "' is " + dtype + " " + shape_string(shape) +
                        ": expected " + tensor.dtype + " " + shape_string(tensor.shape) + " (-1: dynamic) as " + where +
                        " says; the engine and its description do not belong together");
    }
}

class OpenVinoRuntime : public Runtime {
public:
    OpenVinoRuntime(const Description& description, const std::string& engine_path, bool verbose) : description_(description) {
        const EngineSpec& engine = *description.engine;
        const std::string where = engine_path + ".json", file = std::filesystem::path(engine_path).filename();
        ov::Core core;
        const std::shared_ptr<ov::Model> model =
            openvino("reading " + file, [&] { return core.read_model(engine_path); });
        check_io(*model, description, file, where);
        // Bounded to the profile: OpenVINO itself then refuses a shape outside it.
        ov::PartialShape bounds;
        for (size_t i = 0; i < engine.profile_min.size(); ++i)
            bounds.push_back(ov::Dimension(engine.profile_min[i], engine.profile_max[i]));
        openvino("reshaping the input to the profile", [&] { model->reshape({{description.input.name, bounds}}); });
        const ov::element::Type precision(engine.inference_precision);
        compiled_ = openvino("compiling for " + engine.device, [&] {
            return core.compile_model(model, engine.device, ov::hint::inference_precision(precision));
        });
        request_ = openvino("creating an infer request", [&] { return compiled_.create_infer_request(); });
        core_ = core;
        model_ = model;
        if (verbose)
            std::fprintf(stderr, "openvino: %s compiled for %s, inference precision %s\n", file.c_str(),
                         engine.device.c_str(),
                         compiled_.get_property(ov::hint::inference_precision).get_type_name().c_str());
    }

    std::vector<Tensor> infer(const InputTensor& input) override {
        const ov::element::Type type = input.is_uint8() ? ov::element::u8 : ov::element::f32;
        ov::Tensor tensor(type, ov::Shape(input.shape.begin(), input.shape.end()));
        std::memcpy(tensor.data(), input.bytes(), input.byte_size());
        ov::InferRequest& request = request_for(input.shape);
        openvino("inference", [&] {
            request.set_tensor(description_.input.name, tensor);
            request.infer();
        });
        std::vector<Tensor> outputs;
        for (const OutputSpec& output : description_.outputs) {
            const ov::Tensor result = openvino("fetching output '" + output.name + "'",
                                               [&] { return request.get_tensor(output.name); });
            if (result.get_element_type() != ov::element::f32)
                throw Error("OpenVINO output '" + output.name + "' is " + dtype_name(result.get_element_type()) +
                            ": expected float32, as vitdeploy engines keep their outputs at every precision");
            const ov::Shape shape = result.get_shape();
            const float* data = result.data<const float>();
            outputs.push_back({std::vector<int64_t>(shape.begin(), shape.end()),
                               std::vector<float>(data, data + result.get_size())});
        }
        return outputs;
    }

private:
    // As the Python runner (vitdeploy/runners/openvino.py): the first kStaticShapes input shapes each get a model
    // compiled for that shape (the plugin then fuses the shape arithmetic, faster, and the same numbers as
    // Python's); any other shape runs on the dynamic compile made at load.
    static constexpr size_t kStaticShapes = 2;

    ov::InferRequest& request_for(const std::vector<int64_t>& shape) {
        const auto found = static_requests_.find(shape);
        if (found != static_requests_.end())
            return found->second;
        const ov::PartialShape concrete(ov::Shape(shape.begin(), shape.end()));
        const bool in_profile = model_->input(description_.input.name).get_partial_shape().compatible(concrete);
        if (!in_profile || static_requests_.size() >= kStaticShapes || !model_->is_dynamic())
            return request_;  // a shape outside the profile: the dynamic compile refuses it
        const std::shared_ptr<ov::Model> fixed = model_->clone();
        openvino("reshaping the input to " + shape_string(shape),
                 [&] { fixed->reshape({{description_.input.name, concrete}}); });
        const EngineSpec& engine = *description_.engine;
        const ov::element::Type precision(engine.inference_precision);
        ov::CompiledModel compiled = openvino("compiling for " + shape_string(shape), [&] {
            return core_.compile_model(fixed, engine.device, ov::hint::inference_precision(precision));
        });
        return static_requests_.emplace(shape, openvino("creating an infer request", [&] {
            return compiled.create_infer_request(); })).first->second;
    }

    Description description_;
    ov::Core core_;
    std::shared_ptr<ov::Model> model_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
    std::map<std::vector<int64_t>, ov::InferRequest> static_requests_;
};

}  // namespace

std::vector<Tensor> run_openvino_graph(const std::string& path, const std::string& inference_precision,
                                       const std::vector<GraphInput>& inputs, const std::vector<std::string>& outputs) {
    const std::string file = std::filesystem::path(path).filename();
    ov::Core core;
    ov::CompiledModel compiled = openvino("compiling " + file, [&] {
        return core.compile_model(path, "CPU", ov::hint::inference_precision(ov::element::Type(inference_precision)));
    });
    ov::InferRequest request = openvino("creating an infer request", [&] { return compiled.create_infer_request(); });
    for (const GraphInput& input : inputs) {
        const bool ints = std::holds_alternative<std::vector<int32_t>>(input.data);
        ov::Tensor tensor(ints ? ov::element::i32 : ov::element::f32, ov::Shape(input.shape.begin(), input.shape.end()));
        if (ints) {
            const auto& values = std::get<std::vector<int32_t>>(input.data);
            std::memcpy(tensor.data(), values.data(), values.size() * sizeof(int32_t));
        } else {
            const auto& values = std::get<std::vector<float>>(input.data);
            std::memcpy(tensor.data(), values.data(), values.size() * sizeof(float));
        }
        openvino("setting input '" + input.name + "'", [&] { request.set_tensor(input.name, tensor); });
    }
    openvino("inference of " + file, [&] { request.infer(); });
    std::vector<Tensor> results;
    for (const std::string& name : outputs) {
        const ov::Tensor result = openvino("fetching output '" + name + "'", [&] { return request.get_tensor(name); });
        const ov::Shape shape = result.get_shape();
        const float* data = result.data<const float>();
        results.push_back({std::vector<int64_t>(shape.begin(), shape.end()), std::vector<float>(data, data + result.get_size())});
    }
    return results;
}

Backend openvino_backend() {
    const std::string build = ov::get_openvino_version().buildNumber;
    const std::string headers = std::to_string(OPENVINO_VERSION_MAJOR) + "." + std::to_string(OPENVINO_VERSION_MINOR) +
                                "." + std::to_string(OPENVINO_VERSION_PATCH);
    return {"openvino", version_string(runtime_version()), "(build " + build + ", headers " + headers + ")",
            check_version,
            [](const Description& description, const std::string& engine_path, bool verbose) -> std::unique_ptr<Runtime> {
                return std::make_unique<OpenVinoRuntime>(description, engine_path, verbose);
            }};
}

}  // namespace vitdeploy_demo
