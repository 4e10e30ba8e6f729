// The AOTInductor runtime (libtorch): loads a .pt2 package built by `vitdeploy build --backend aoti` with
// AOTIModelPackageLoader and runs it on the CPU. The package is tied to the torch release that compiled it,
// so the engine's torch version must be this libtorch's. Its weights are realigned after loading, as the Python
// runner does (vitdeploy/runners/aoti.py: the loader's copy leaves every weight 16 bytes off a cache line).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include "error.hpp"
#include "runtime.hpp"

namespace vitdeploy_demo {
namespace {

std::string libtorch_version() {
    return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
           std::to_string(TORCH_VERSION_PATCH);
}

// A package loads on the torch release that compiled it (its kernels call that libtorch's C shim), on the CPU.
void check_engine(const EngineSpec& engine) {
    if (engine.backend_version != libtorch_version())
        throw Error("the engine was compiled by torch " + engine.backend_version + " but this vitdeploy_demo runs "
                    "libtorch " + libtorch_version() + ": expected the same release; rebuild the engine with this "
                    "torch or the demo against torch " + engine.backend_version);
    if (engine.device != "cpu")
        throw Error("the engine was compiled for " + engine.device + " but this vitdeploy_demo runs AOTInductor "
                    "packages on the CPU: expected an engine built with `vitdeploy build --backend aoti --device cpu`");
}

// Runs a libtorch call; its exception becomes one line saying what failed.
template <typename Call>
auto libtorch(const std::string& what, Call&& call) {
    try {
        return call();
    } catch (const c10::Error& exc) {
        const std::string message = exc.what_without_backtrace();
        throw Error("AOTInductor " + what + " failed: " + message.substr(0, message.find('\n')));
    }
}

// The loader copies a CPU package's weights into one malloc'd blob, 16 bytes past a page, so each starts 16
// bytes off a cache line and oneDNN's AMX/AVX-512 GEMMs read every row from two lines. Hands the runner
// aligned copies (torch's allocator aligns), used in place, and frees the blob; returns the copies, which
// must outlive the runner's use of them (a copy at load, also where torch aligns them one day).
std::unordered_map<std::string, at::Tensor> realign_constants(torch::inductor::AOTIModelContainerRunner& runner) {
    const std::unordered_map<std::string, at::Tensor> constants = runner.extract_constants_map(false);
    std::unordered_map<std::string, std::string> names;
    for (const auto& [name, fqn] : runner.getConstantNamesToOriginalFQNs())
        names[fqn] = name;
    std::unordered_map<std::string, at::Tensor> owned;
    for (const auto& [fqn, tensor] : constants)
        owned.emplace(names.count(fqn) ? names.at(fqn) : fqn, tensor.clone());
    runner.update_constant_buffer(owned, /*use_inactive=*/true, /*validate_full_updates=*/true, /*user_managed=*/true);
    runner.swap_constant_buffer();
    runner.free_inactive_constant_buffer();
    return owned;
}

class AotiRuntime : public Runtime {
public:
    AotiRuntime(const Description& description, const std::string& engine_path, bool verbose)
        : description_(description),
          loader_(libtorch("loading " + std::filesystem::path(engine_path).filename().string(),
                           [&] { return std::make_unique<torch::inductor::AOTIModelPackageLoader>(engine_path); })) {
        weights_ = libtorch("realigning the weights", [&] { return realign_constants(*loader_->get_runner()); });
        if (verbose)
            std::fprintf(stderr, "aoti: %s loaded on the CPU (libtorch %s)\n", engine_path.c_str(),
                         libtorch_version().c_str());
    }

    std::vector<Tensor> infer(const InputTensor& input) override {
        const at::ScalarType type = input.is_uint8() ? at::kByte : at::kFloat;
        at::Tensor batch = at::empty(input.shape, at::TensorOptions().dtype(type));
        std::memcpy(batch.data_ptr(), input.bytes(), input.byte_size());
        const std::vector<at::Tensor> results = libtorch("inference", [&] { return loader_->run({batch}); });
        if (results.size() != description_.outputs.size())
            throw Error("the AOTInductor package returned " + std::to_string(results.size()) + " outputs: expected " +
                        std::to_string(description_.outputs.size()) + " as its description says");
        std::vector<Tensor> outputs;
        for (size_t i = 0; i < results.size(); ++i) {
            const at::Tensor result = results[i].to(at::kFloat).contiguous();
            const float* data = result.data_ptr<float>();
            outputs.push_back({result.sizes().vec(), std::vector<float>(data, data + result.numel())});
        }
        return outputs;
    }

private:
    Description description_;
    std::unordered_map<std::string, at::Tensor> weights_;  // read in place by loader_'s runner: destroyed after it
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace

Backend aoti_backend() {
    return {"aoti", libtorch_version(), "(libtorch, AOTInductor packages on the CPU)", check_engine,
            [](const Description& description, const std::string& engine_path, bool verbose) -> std::unique_ptr<Runtime> {
                return std::make_unique<AotiRuntime>(description, engine_path, verbose);
            }};
}

}  // namespace vitdeploy_demo
