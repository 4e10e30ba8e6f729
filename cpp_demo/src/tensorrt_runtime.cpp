// The TensorRT / TensorRT-RTX runtime (named-tensor API): deserialises the engine, checks its tensors and
// profile against the description, runs it on a CUDA stream with the input shape set and every output bound
// by name. Which family is compiled in is VITDEPLOY_TRT_BACKEND ("tensorrt" or "tensorrt_rtx").
#include <cuda_runtime_api.h>

#include <NvInfer.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "error.hpp"
#include "runtime.hpp"

#ifndef VITDEPLOY_TRT_BACKEND
#define VITDEPLOY_TRT_BACKEND "tensorrt"
#endif

namespace vitdeploy_demo {
namespace {

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
    if (status != cudaSuccess) throw Error(std::string("CUDA ") + what + " failed: " + cudaGetErrorString(status));
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

std::vector<char> read_engine(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("engine " + path + " cannot be read");
    return std::vector<char>((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

// The engine's IO tensors and profile must be the ones its description lists.
void check_engine(const nvinfer1::ICudaEngine& engine, const Description& description, const std::string& where) {
    std::vector<std::string> expected{description.input.name}, actual;
    for (const OutputSpec& output : description.outputs) expected.push_back(output.name);
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i) actual.push_back(engine.getIOTensorName(i));
    std::sort(expected.begin(), expected.end());
    std::sort(actual.begin(), actual.end());
    if (actual != expected)
        throw Error("the engine's tensors differ from those " + where +
                    " describes: engine and description do not match");
    const nvinfer1::DataType input_type =
        description.input.normalised_in_graph ? nvinfer1::DataType::kUINT8 : nvinfer1::DataType::kFLOAT;
    if (engine.getTensorIOMode(description.input.name.c_str()) != nvinfer1::TensorIOMode::kINPUT ||
        engine.getTensorDataType(description.input.name.c_str()) != input_type)
        throw Error("engine tensor '" + description.input.name + "' is not a " + description.input.dtype() + " input as " +
                        where + " says: engine and description do not match");
    const char* input = description.input.name.c_str();
    const auto lo = to_vector(engine.getProfileShape(input, 0, nvinfer1::OptProfileSelector::kMIN));
    const auto hi = to_vector(engine.getProfileShape(input, 0, nvinfer1::OptProfileSelector::kMAX));
    if (lo != description.engine->profile_min || hi != description.engine->profile_max)
        throw Error("engine profile " + shape_string(lo) + ".." + shape_string(hi) + " differs from " +
                        where + " (" + shape_string(description.engine->profile_min) + ".." +
                        shape_string(description.engine->profile_max) + "): engine and description do not match");
}

std::string version_string(const std::vector<int>& v) {
    return std::to_string(v[0]) + "." + std::to_string(v[1]) + "." + std::to_string(v[2]);
}

std::vector<int> library_version() {
    const int32_t library = getInferLibVersion();  // major * 10000 + minor * 100 + patch
    return {library / 10000, library / 100 % 100, library % 100};
}

// A serialised engine loads only on the TensorRT version that built it (its X.Y.Z is what the library reports).
void check_version(const EngineSpec& engine) {
    const std::vector<int> built = version_numbers(engine.backend_version, "the engine's " VITDEPLOY_TRT_BACKEND);
    if (built != library_version())
        throw Error("the engine was built with " VITDEPLOY_TRT_BACKEND " " + engine.backend_version +
                    " but this vitdeploy_demo runs " + version_string(library_version()) +
                    ": engines only load on the version that built them; rebuild it with `vitdeploy build` or the "
                    "demo against that version");
}

// A GPU is there and is the one the engine was built for (any of compute capability 8.0+ for a portable one).
void check_gpu(const EngineSpec& engine) {
    int devices = 0;
    const cudaError_t found = cudaGetDeviceCount(&devices);
    if (found != cudaSuccess || devices == 0)
        throw Error(std::string("no usable CUDA GPU (") +
                    (found != cudaSuccess ? cudaGetErrorString(found) : "0 devices") +
                    "): TensorRT engines run on an NVIDIA GPU; use an OpenVINO engine on a CPU");
    int major = 0, minor = 0;
    cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), "compute capability query");
    cuda_check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0), "compute capability query");
    const std::string actual = std::to_string(major) + "." + std::to_string(minor);
    if (engine.compute_capability && *engine.compute_capability != actual)
        throw Error("engine was built for GPUs of compute capability " + *engine.compute_capability +
                    ", this GPU is " + actual + ": rebuild it on this machine with `vitdeploy build`");
    if (!engine.compute_capability && major < 8)
        throw Error("this GPU has compute capability " + actual + "; a portable " VITDEPLOY_TRT_BACKEND
                    " engine needs 8.0 or newer: rebuild it for this GPU with `vitdeploy build --target-gpu`");
}

class TensorRtRuntime : public Runtime {
public:
    TensorRtRuntime(const Description& description, const std::string& engine_path, bool verbose)
        : description_(description), where_(engine_path + ".json"), logger_(verbose) {
        check_gpu(*description.engine);
        const std::vector<char> blob = read_engine(engine_path);
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        if (!runtime_) throw fail("runtime creation failed");
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_)
            throw fail("cannot deserialise the engine (built by another TensorRT version or for another GPU?)");
        check_engine(*engine_, description, where_);
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw fail("cannot create an execution context");
    }

    std::vector<Tensor> infer(const InputTensor& input) override {
        const char* input_name = description_.input.name.c_str();
        if (!context_->setInputShape(input_name, to_dims(input.shape)))
            throw fail("rejected input shape " + shape_string(input.shape));
        DeviceBuffer input_buffer(input.byte_size());
        cuda_check(cudaMemcpy(input_buffer.ptr, input.bytes(), input.byte_size(), cudaMemcpyHostToDevice),
                   "copy of the input");
        context_->setTensorAddress(input_name, input_buffer.ptr);
        std::vector<std::unique_ptr<DeviceBuffer>> buffers;
        std::vector<Tensor> outputs;
        const auto [height, width] = shape_hw(description_.input, input.shape);
        for (const OutputSpec& output : description_.outputs) {
            const auto shape = to_vector(context_->getTensorShape(output.name.c_str()));
            const auto expected = output_shape(output, input.shape[0], height, width);
            if (shape != expected)
                throw Error("engine output '" + output.name + "' has shape " + shape_string(shape) + " but " +
                            where_ + " implies " + shape_string(expected) + ": engine and description do not match");
            if (engine_->getTensorDataType(output.name.c_str()) != nvinfer1::DataType::kFLOAT)
                throw Error("engine output '" + output.name + "' is not float32: vitdeploy engines keep float32 "
                            "outputs at every precision; rebuild it with `vitdeploy build`");
            outputs.push_back({shape, std::vector<float>(static_cast<size_t>(element_count(shape)))});
            buffers.push_back(std::make_unique<DeviceBuffer>(outputs.back().data.size() * sizeof(float)));
            if (!context_->setTensorAddress(output.name.c_str(), buffers.back()->ptr))
                throw fail("rejected the address of output '" + output.name + "'");
        }
        cudaStream_t stream;
        cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
        const bool enqueued = context_->enqueueV3(stream);
        const cudaError_t synced = cudaStreamSynchronize(stream);
        cudaStreamDestroy(stream);
        if (!enqueued) throw fail("inference (enqueueV3) failed");
        cuda_check(synced, "inference");
        for (size_t i = 0; i < outputs.size(); ++i)
            cuda_check(cudaMemcpy(outputs[i].data.data(), buffers[i]->ptr, outputs[i].data.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost), "copy of an output");
        return outputs;
    }

private:
    Error fail(const std::string& what) const {
        return Error("TensorRT " + what + (logger_.last_error.empty() ? "" : ": " + logger_.last_error));
    }

    Description description_;
    std::string where_;
    Logger logger_;  // declared before the TensorRT objects, so it outlives them
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
};

}  // namespace

Backend tensorrt_backend() {  // "tensorrt 11.1.0 (headers 11.1.0)": the library, which must match the engine's
    const std::string headers = std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                                std::to_string(NV_TENSORRT_PATCH);
    return {VITDEPLOY_TRT_BACKEND, version_string(library_version()), "(headers " + headers + ")", check_version,
            [](const Description& description, const std::string& engine_path, bool verbose) -> std::unique_ptr<Runtime> {
                return std::make_unique<TensorRtRuntime>(description, engine_path, verbose);
            }};
}

}  // namespace vitdeploy_demo
