// vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose]: runs a vitdeploy engine on one image with whichever
// runtime its description names (OpenVINO or TensorRT, as compiled in) and writes the pyramid, its stats and
// heatmaps to DIR. With --point/--box (a SAM2 artifact exported with --decoder) it then runs SAM2's decoder
// graph (OpenVINO) on the prompts and writes the masks instead (docs/sam2.md). Everything cheap is checked before the engine is loaded: the description, the engine's
// files (size, sha256), the runtime and its version, the image and the input against the engine's profile.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine_files.hpp"
#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "pyramid.hpp"
#include "runtime.hpp"
#include "sam2.hpp"

#include <nlohmann/json.hpp>

namespace vd = vitdeploy_demo;
namespace fs = std::filesystem;

namespace {

const char kUsage[] = "usage: vitdeploy_demo ENGINE IMAGE [--out DIR] [--verbose] | --version\n"
                      "       vitdeploy_demo ENGINE IMAGE --point X,Y[,LABEL]... [--box X0,Y0,X1,Y1] [--single]\n"
                      "                      [--decoder DECODER] [--out DIR]   (SAM2 with its decoder)\n"
                      "Reads ENGINE.json (the engine description), writes input.npy, <output>.npy, stats.json,\n"
                      "<level>_norm.npy and <level>_heatmap.png to DIR (default vitdeploy_demo_out); with prompts\n"
                      "masks.npy, scores.npy, low_res_masks.npy and mask<i>.png instead.\n";

struct Args {
    std::string engine, image, out_dir = "vitdeploy_demo_out", decoder;
    std::vector<std::string> points;
    std::optional<std::string> box;
    bool single = false;
    bool verbose = false;
    bool version = false;
};

Args parse_args(int argc, char** argv) {
    Args args;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--out" && i + 1 < argc) args.out_dir = argv[++i];
        else if (arg == "--point" && i + 1 < argc) args.points.push_back(argv[++i]);
        else if (arg == "--box" && i + 1 < argc) args.box = argv[++i];
        else if (arg == "--decoder" && i + 1 < argc) args.decoder = argv[++i];
        else if (arg == "--single") args.single = true;
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

// The decoder graph to run: --decoder, else the artifact's OpenVINO decoder engine of the encoder engine's
// precision, else decoder.onnx; and OpenVINO's inference precision for it (from its record, f32 without one).
std::pair<std::string, std::string> decoder_graph(const Args& args, const vd::EngineSpec& spec, const fs::path& dir) {
    std::string path = args.decoder;
    if (path.empty()) {
        const fs::path engine = dir / ("decoder.openvino." + spec.precision + ".xml");
        path = (fs::exists(engine) ? engine : dir / "decoder.onnx").string();
    }
    if (!fs::exists(path)) throw vd::Error("SAM2 decoder " + path + " does not exist: export the artifact with --decoder");
    std::string precision = "f32";
    if (std::ifstream record{path + ".json"}) {
        const nlohmann::json data = nlohmann::json::parse(record, nullptr, false);
        if (data.is_object() && data.contains("inference_precision") && data["inference_precision"].is_string())
            precision = data["inference_precision"].get<std::string>();
    }
    return {path, precision};
}

// The encoder's weights sha256 as its engine description records it.
std::string encoder_weights_sha256(const std::string& engine) {
    std::ifstream file(engine + ".json");
    const nlohmann::json data = nlohmann::json::parse(file, nullptr, false);
    if (data.is_object() && data.contains("weights") && data["weights"].contains("sha256"))
        return data["weights"]["sha256"].get<std::string>();
    return "";
}

int run_sam2(const Args& args, const vd::Description& description, const vd::Backend& backend, const vd::Image& image) {
    const vd::EngineSpec& spec = *description.engine;
    const fs::path dir = fs::path(args.engine).parent_path().empty() ? fs::path(".") : fs::path(args.engine).parent_path();
    const vd::Sam2Decoder decoder = vd::load_sam2_decoder((dir / "decoder.json").string());
    const std::string weights = encoder_weights_sha256(args.engine);
    if (weights != decoder.encoder_weights_sha256)
        throw vd::Error((dir / "decoder.json").string() + " belongs to an image encoder with weights sha256 " +
                        decoder.encoder_weights_sha256.substr(0, 12) + ".., but " + args.engine + " has " +
                        weights.substr(0, 12) + "..: expected the decoder of the same SAM2 checkpoint");
    std::vector<vd::Sam2Point> points;
    for (const std::string& point : args.points) points.push_back(vd::parse_point(point));
    std::optional<std::array<float, 4>> box;
    if (args.box) box = vd::parse_box(*args.box);
    const vd::Sam2Prompt prompt = vd::sam2_prompt(points, box, image.height, image.width, decoder);
    const auto [decoder_path, precision] = decoder_graph(args, spec, dir);
    const vd::InputTensor input = vd::sam2_input(image, decoder.image_size, description.input);
    if (!within(input.shape, spec.profile_min, spec.profile_max))
        throw vd::Error("SAM2 input " + vd::shape_string(input.shape) + " is outside the engine's profile " +
                        vd::shape_string(spec.profile_min) + ".." + vd::shape_string(spec.profile_max) +
                        ": expected the encoder engine of the decoder's artifact");
    const std::vector<vd::Tensor> pyramid = backend.open(description, args.engine, args.verbose)->infer(input);
    std::vector<vd::GraphInput> feed;
    for (const char* level : {"stride4", "stride8", "stride16"}) {
        const auto found = std::find_if(description.outputs.begin(), description.outputs.end(),
                                        [&](const vd::OutputSpec& o) { return o.name == level; });
        if (found == description.outputs.end())
            throw vd::Error(args.engine + " has no output " + level + ": expected a SAM2 encoder engine");
        const vd::Tensor& tensor = pyramid[found - description.outputs.begin()];
        feed.push_back({level, tensor.shape, tensor.data});
    }
    const int64_t n = static_cast<int64_t>(prompt.labels.size()), m = decoder.mask_size;
    feed.push_back({"point_coords", {1, n, 2}, prompt.coords});
    feed.push_back({"point_labels", {1, n}, prompt.labels});
    feed.push_back({"mask_input", {1, 1, m, m}, std::vector<float>(static_cast<size_t>(m * m), 0.0f)});
    feed.push_back({"has_mask_input", {1}, std::vector<float>{0.0f}});
    const std::vector<std::string> names = args.single ? std::vector<std::string>{"mask", "iou_prediction"}
                                                       : std::vector<std::string>{"masks", "iou_predictions"};
    const std::vector<vd::Tensor> result = vd::run_openvino_graph(decoder_path, precision, feed, names);
    vd::Tensor low_res{{result[0].shape[1], m, m}, result[0].data};
    const vd::Tensor masks = vd::upsample_masks(low_res, image.height, image.width);
    vd::Tensor binary = masks;
    for (float& v : binary.data) v = v > decoder.mask_threshold ? 1.0f : 0.0f;
    for (float& v : low_res.data) v = std::clamp(v, -32.0f, 32.0f);
    fs::create_directories(args.out_dir);
    const fs::path out(args.out_dir);
    vd::write_npy((out / "masks.npy").string(), binary);
    vd::write_npy((out / "scores.npy").string(), vd::Tensor{{result[1].shape[1]}, result[1].data});
    vd::write_npy((out / "low_res_masks.npy").string(), low_res);
    const size_t plane = static_cast<size_t>(image.height) * image.width;
    std::printf("%s + %s (OpenVINO, %s): image %dx%d -> %zu mask(s) at %dx%d\n", args.engine.c_str(),
                fs::path(decoder_path).filename().c_str(), precision.c_str(), image.height, image.width,
                static_cast<size_t>(low_res.shape[0]), image.height, image.width);
    for (int64_t i = 0; i < low_res.shape[0]; ++i) {
        const float* logits = masks.data.data() + i * plane;
        vd::write_png((out / ("mask" + std::to_string(i) + ".png")).string(),
                      vd::mask_overlay(image, logits, decoder.mask_threshold));
        const auto area = std::count_if(logits, logits + plane, [&](float v) { return v > decoder.mask_threshold; });
        std::printf("mask%lld: score %.4f, %lld pixels\n", static_cast<long long>(i), result[1].data[i],
                    static_cast<long long>(area));
    }
    std::printf("wrote %s\n", args.out_dir.c_str());
    return 0;
}

int run(const Args& args) {
    const vd::Description description = load_description(args.engine);
    const vd::EngineSpec& spec = *description.engine;
    const std::string directory = fs::path(args.engine).parent_path().string();
    vd::check_engine_files(spec, directory.empty() ? "." : directory, args.engine + ".json");
    const vd::Backend& backend = vd::backend_for(spec);
    const vd::Image image = vd::load_image(args.image);
    if (!args.points.empty() || args.box) return run_sam2(args, description, backend, image);
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
