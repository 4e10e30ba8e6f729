// vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose]: runs a vitdeploy engine on one image with whichever
// runtime its description names (OpenVINO or TensorRT, as compiled in) and writes the pyramid, its stats and
// heatmaps to DIR. Everything cheap is checked before the engine is loaded: the description, the engine's
// files (size, sha256), the runtime and its version, the image and the input against the engine's profile.
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine_files.hpp"
#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "pyramid.hpp"
#include "runtime.hpp"

namespace vd = vitdeploy_demo;
namespace fs = std::filesystem;

namespace {

const char kUsage[] = "usage: vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose] | --version\n"
                      "Reads ENGINE.json (the engine description), writes input.npy, <output>.npy, stats.json,\n"
                      "<level>_norm.npy and <level>_heatmap.png to DIR (default vitdeploy_demo_out).\n";

struct Args {
    std::string engine, image, out_dir = "vitdeploy_demo_out";
    bool verbose = false;
    bool version = false;
};

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

bool within(const std::vector<int64_t>& shape, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
    for (size_t i = 0; i < shape.size(); ++i)
        if (shape[i] < lo.at(i) || shape[i] > hi.at(i)) return false;
    return true;
}

vd::Description load_description(const std::string& engine) {
    const std::string path = engine + ".json";
    if (!fs::exists(path)) {
        if (!fs::exists(engine)) throw vd::Error("engine " + engine + " does not exist");
        throw vd::Error("engine description " + path + " does not exist: expected it beside the engine, as "
                        "`vitdeploy build` writes it");
    }
    vd::Description description = vd::load_description(path);
    if (!description.engine) throw vd::Error(path + " has no 'engine' section: expected an engine description");
    const std::string name = fs::path(engine).filename().string();
    if (name != description.engine->file)
        throw vd::Error("engine " + name + " is described as " + description.engine->file + " in " + path +
                        ": expected the names `vitdeploy build` gave them (the files are found by name)");
    return description;
}

int run(const Args& args) {
    const vd::Description description = load_description(args.engine);
    const vd::EngineSpec& spec = *description.engine;
    const std::string directory = fs::path(args.engine).parent_path().string();
    vd::check_engine_files(spec, directory.empty() ? "." : directory, args.engine + ".json");
    const vd::Backend& backend = vd::backend_for(spec);
    const vd::Image image = vd::load_image(args.image);
    const vd::InputTensor input = vd::preprocess(image, description.input);
    // Both are in the input's layout, so they compare axis by axis.
    if (!within(input.shape, spec.profile_min, spec.profile_max))
        throw vd::Error("input " + vd::shape_string(input.shape) + " for image " + args.image +
                        " is outside the engine's profile " + vd::shape_string(spec.profile_min) + ".." +
                        vd::shape_string(spec.profile_max));
    const std::vector<vd::Tensor> outputs = backend.open(description, args.engine, args.verbose)->infer(input);
    fs::create_directories(args.out_dir);
    const fs::path dir(args.out_dir);
    vd::write_npy((dir / "input.npy").string(), input);
    for (size_t i = 0; i < outputs.size(); ++i)
        vd::write_npy((dir / (description.outputs[i].name + ".npy")).string(), outputs[i]);
    const auto stats = vd::consume_pyramid(description, image, vd::shape_hw(description.input, input.shape), input.shape[0],
                                           outputs, args.out_dir);
    std::printf("%s (%s, built with %s %s, run with %s %s on %s): image %dx%d -> input %s %s\n", args.engine.c_str(),
                spec.precision.c_str(), spec.backend.c_str(), spec.backend_version.c_str(), backend.name.c_str(),
                backend.version.c_str(), spec.device.c_str(), image.height, image.width,
                vd::shape_string(input.shape).c_str(), description.input.dtype());
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
    if (args.version) {  // one line per runtime compiled in: "openvino 2026.4.1 (build ..., headers 2026.4.1)"
        if (vd::compiled_backends().empty())
            std::puts("no runtime compiled in (CMake found neither OpenVINO nor TensorRT)");
        for (const vd::Backend& backend : vd::compiled_backends())
            std::printf("%s %s %s\n", backend.name.c_str(), backend.version.c_str(), backend.detail.c_str());
        return 0;
    }
    try {
        return run(args);
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "vitdeploy_demo: error: %s\n", exc.what());
        return 1;
    }
}
