// vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose]: runs a vitdeploy engine on one image with the
// TensorRT C++ runtime (named-tensor API) and writes the pyramid, its stats and heatmaps to DIR.
#include <cuda_runtime_api.h>

#include <NvInfer.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "pyramid.hpp"

#ifndef VITDEPLOY_TRT_BACKEND
#define VITDEPLOY_TRT_BACKEND "tensorrt"
#endif

namespace vd = vitdeploy_demo;

namespace {

const char kUsage[] = "usage: vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose] | --version\n"
                      "Reads ENGINE.json (the engine sidecar), writes input.npy, <output>.npy, stats.json,\n"
                      "<level>_norm.npy and <level>_heatmap.png to DIR (default vitdeploy_demo_out).\n";

struct Args {
    std::string engine, image, out_dir = "vitdeploy_demo_out";
    bool verbose = false;
    bool version = false;
};

// Keeps TensorRT's last error for the one-line message; prints the rest only with --verbose.
class Logger : public nvinfer1::ILogger {
public:
    explicit Logger(bool verbose) : verbose_(verbose) {}
    void log(Severity severity, const char* message) noexcept override {
        if (severity <= Severity::kERROR) last_error = message;
        else if (verbose_ && severity <= Severity::kINFO) std::fprintf(stderr, "tensorrt: %s\n", message);
    }
    std::string last_error;

private:
    bool verbose_;
};

void cuda_check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw vd::Error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(status));
}

struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { cudaFree(ptr); }
};

std::vector<int64_t> to_vector(const nvinfer1::Dims& dims) {
    if (dims.nbDims < 0) return {};
    return std::vector<int64_t>(dims.d, dims.d + dims.nbDims);
}

nvinfer1::Dims to_dims(const std::vector<int64_t>& shape) {
    nvinfer1::Dims dims{};
    dims.nbDims = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) dims.d[i] = shape[i];
    return dims;
}

std::vector<char> read_engine(const std::string& path, int64_t expected_bytes, const std::string& sidecar_path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw vd::Error("engine " + path + " does not exist or cannot be read");
    std::vector<char> blob((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (static_cast<int64_t>(blob.size()) != expected_bytes)
        throw vd::Error("engine " + path + " is " + std::to_string(blob.size()) + " bytes but " + sidecar_path +
                        " records " + std::to_string(expected_bytes) + ": they do not belong together");
    return blob;
}

bool within(const std::vector<int64_t>& shape, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
    for (size_t i = 0; i < shape.size(); ++i)
        if (shape[i] < lo.at(i) || shape[i] > hi.at(i)) return false;
    return true;
}

// The engine's IO tensors and profile must be the ones its sidecar describes.
void check_engine(const nvinfer1::ICudaEngine& engine, const vd::Sidecar& sidecar, const std::string& where) {
    std::vector<std::string> expected{sidecar.input.name}, actual;
    for (const vd::OutputSpec& output : sidecar.outputs) expected.push_back(output.name);
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i) actual.push_back(engine.getIOTensorName(i));
    std::sort(expected.begin(), expected.end());
    std::sort(actual.begin(), actual.end());
    if (actual != expected)
        throw vd::Error("the engine's tensors differ from those " + where +
                        " describes: engine and sidecar do not match");
    const nvinfer1::DataType input_type =
        sidecar.input.normalised_in_graph ? nvinfer1::DataType::kUINT8 : nvinfer1::DataType::kFLOAT;
    if (engine.getTensorIOMode(sidecar.input.name.c_str()) != nvinfer1::TensorIOMode::kINPUT ||
        engine.getTensorDataType(sidecar.input.name.c_str()) != input_type)
        throw vd::Error("engine tensor '" + sidecar.input.name + "' is not a " + sidecar.input.dtype() + " input as " +
                        where + " says: engine and sidecar do not match");
    const char* input = sidecar.input.name.c_str();
    const auto lo = to_vector(engine.getProfileShape(input, 0, nvinfer1::OptProfileSelector::kMIN));
    const auto hi = to_vector(engine.getProfileShape(input, 0, nvinfer1::OptProfileSelector::kMAX));
    if (lo != sidecar.engine->profile_min || hi != sidecar.engine->profile_max)
        throw vd::Error("engine profile " + vd::shape_string(lo) + ".." + vd::shape_string(hi) + " differs from " +
                        where + " (" + vd::shape_string(sidecar.engine->profile_min) + ".." +
                        vd::shape_string(sidecar.engine->profile_max) + "): engine and sidecar do not match");
}

std::vector<vd::Tensor> infer(const std::vector<char>& blob, const vd::Sidecar& sidecar, const vd::InputTensor& input,
                              const std::string& where, bool verbose) {
    int devices = 0;
    const cudaError_t found = cudaGetDeviceCount(&devices);
    if (found != cudaSuccess || devices == 0)
        throw vd::Error(std::string("no usable CUDA GPU (") +
                        (found != cudaSuccess ? cudaGetErrorString(found) : "0 devices") +
                        "): TensorRT engines run on an NVIDIA GPU");
    Logger logger(verbose);
    auto fail = [&](const std::string& what) {
        return vd::Error("TensorRT " + what + (logger.last_error.empty() ? "" : ": " + logger.last_error));
    };
    std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
    if (!runtime) throw fail("runtime creation failed");
    std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine) throw fail("cannot deserialise the engine (built by another TensorRT version or for another GPU?)");
    check_engine(*engine, sidecar, where);
    std::unique_ptr<nvinfer1::IExecutionContext> context(engine->createExecutionContext());
    if (!context) throw fail("cannot create an execution context");
    const char* input_name = sidecar.input.name.c_str();
    if (!context->setInputShape(input_name, to_dims(input.shape)))
        throw fail("rejected input shape " + vd::shape_string(input.shape));

    DeviceBuffer input_buffer(input.byte_size());
    cuda_check(cudaMemcpy(input_buffer.ptr, input.bytes(), input.byte_size(), cudaMemcpyHostToDevice),
               "copy of the input");
    context->setTensorAddress(input_name, input_buffer.ptr);
    std::vector<std::unique_ptr<DeviceBuffer>> buffers;
    std::vector<vd::Tensor> outputs;
    const auto [height, width] = vd::shape_hw(sidecar.input, input.shape);
    for (const vd::OutputSpec& output : sidecar.outputs) {
        const auto shape = to_vector(context->getTensorShape(output.name.c_str()));
        const auto expected = vd::output_shape(output, input.shape[0], height, width);
        if (shape != expected)
            throw vd::Error("engine output '" + output.name + "' has shape " + vd::shape_string(shape) + " but " +
                            where + " implies " + vd::shape_string(expected) + ": engine and sidecar do not match");
        if (engine->getTensorDataType(output.name.c_str()) != nvinfer1::DataType::kFLOAT)
            throw vd::Error("engine output '" + output.name + "' is not float32: vitdeploy engines keep float32 "
                            "outputs at every precision; rebuild it with `vitdeploy build`");
        outputs.push_back({shape, std::vector<float>(static_cast<size_t>(vd::element_count(shape)))});
        buffers.push_back(std::make_unique<DeviceBuffer>(outputs.back().data.size() * sizeof(float)));
        if (!context->setTensorAddress(output.name.c_str(), buffers.back()->ptr))
            throw fail("rejected the address of output '" + output.name + "'");
    }
    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    const bool enqueued = context->enqueueV3(stream);
    const cudaError_t synced = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    if (!enqueued) throw fail("inference (enqueueV3) failed");
    cuda_check(synced, "inference");
    for (size_t i = 0; i < outputs.size(); ++i)
        cuda_check(cudaMemcpy(outputs[i].data.data(), buffers[i]->ptr, outputs[i].data.size() * sizeof(float),
                              cudaMemcpyDeviceToHost), "copy of an output");
    return outputs;
}

Args parse_args(int argc, char** argv) {
    Args args;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--out" && i + 1 < argc) args.out_dir = argv[++i];
        else if (arg == "--verbose") args.verbose = true;
        else if (arg == "--version") args.version = true;
        else if (arg.rfind("--", 0) == 0) throw std::invalid_argument(arg);
        else positional.push_back(arg);
    }
    if (args.version) return args;
    if (positional.size() != 2) throw std::invalid_argument("positional");
    args.engine = positional[0];
    args.image = positional[1];
    return args;
}

int run(const Args& args) {
    const std::string sidecar_path = args.engine + ".json";
    if (!std::filesystem::exists(args.engine)) throw vd::Error("engine " + args.engine + " does not exist");
    if (!std::filesystem::exists(sidecar_path))
        throw vd::Error("engine sidecar " + sidecar_path + " does not exist: expected it beside the engine");
    const vd::Sidecar sidecar = vd::load_sidecar(sidecar_path);
    if (!sidecar.engine) throw vd::Error(sidecar_path + " has no 'engine' section: expected an engine sidecar");
    const vd::EngineSpec& spec = *sidecar.engine;
    if (spec.backend != VITDEPLOY_TRT_BACKEND)
        throw vd::Error("the engine was built by " + spec.backend + " but this demo runs " VITDEPLOY_TRT_BACKEND
                        ": rebuild it with " VITDEPLOY_TRT_BACKEND " or the demo against " + spec.backend);
    const std::vector<char> blob = read_engine(args.engine, spec.size_bytes, sidecar_path);
    const vd::Image image = vd::load_image(args.image);
    const vd::InputTensor input = vd::preprocess(image, sidecar.input);
    // Both are in the input's layout, so they compare axis by axis.
    if (!within(input.shape, spec.profile_min, spec.profile_max))
        throw vd::Error("input " + vd::shape_string(input.shape) + " for image " + args.image +
                        " is outside the engine's profile " + vd::shape_string(spec.profile_min) + ".." +
                        vd::shape_string(spec.profile_max));
    const std::vector<vd::Tensor> outputs = infer(blob, sidecar, input, sidecar_path, args.verbose);
    std::filesystem::create_directories(args.out_dir);
    const std::filesystem::path dir(args.out_dir);
    vd::write_npy((dir / "input.npy").string(), input);
    for (size_t i = 0; i < outputs.size(); ++i)
        vd::write_npy((dir / (sidecar.outputs[i].name + ".npy")).string(), outputs[i]);
    const auto stats = vd::consume_pyramid(sidecar, image, vd::shape_hw(sidecar.input, input.shape), input.shape[0],
                                           outputs, args.out_dir);
    std::printf("%s (%s %s, %s): image %dx%d -> input %s %s\n", args.engine.c_str(), spec.backend.c_str(),
                spec.backend_version.c_str(), spec.precision.c_str(), image.height, image.width,
                vd::shape_string(input.shape).c_str(), sidecar.input.dtype());
    std::fputs(vd::stats_table(stats).c_str(), stdout);
    std::printf("wrote %s\n", args.out_dir.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Args args;
    try {
        args = parse_args(argc, argv);
    } catch (const std::invalid_argument&) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    if (args.version) {  // "tensorrt 11.1.0 (headers 11.1.0)": the runtime library, which must match the engine's
        const int32_t library = getInferLibVersion();  // major * 10000 + minor * 100 + patch
        std::printf("%s %d.%d.%d (headers %d.%d.%d)\n", VITDEPLOY_TRT_BACKEND, library / 10000, library / 100 % 100,
                    library % 100, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);
        return 0;
    }
    try {
        return run(args);
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "vitdeploy_demo: error: %s\n", exc.what());
        return 1;
    }
}
