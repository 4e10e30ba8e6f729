// The OpenVINO runtime behind vitdeploy_demo's Runtime interface, on a small real OpenVINO model built here
// (average pooling and a mean: outputs computable by hand), saved as IR and described as `vitdeploy build`
// describes engines. Run by ctest whenever CMake finds OpenVINO. Exported timm models: tests/test_cpp_demo.py.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>
#include <openvino/openvino.hpp>
#include <openvino/opsets/opset13.hpp>

#include "engine_files.hpp"
#include "check.hpp"
#include "error.hpp"
#include "runtime.hpp"

namespace vd = vitdeploy_demo;
namespace ops = ov::opset13;

namespace {

const char kDir[] = "test_openvino_tmp";
const char kXml[] = "test_openvino_tmp/model.openvino.fp32.xml";

// image [N, 3, H, W] -> stride8 (8x8 average pooling) and embedding (mean over H and W).
void save_model() {
    auto image = std::make_shared<ops::Parameter>(ov::element::f32, ov::PartialShape{-1, 3, -1, -1});
    image->output(0).set_names({"image"});
    auto pooled = std::make_shared<ops::AvgPool>(image, ov::Strides{8, 8}, ov::Shape{0, 0}, ov::Shape{0, 0},
                                                 ov::Shape{8, 8}, true);
    pooled->output(0).set_names({"stride8"});
    auto axes = ops::Constant::create(ov::element::i64, ov::Shape{2}, {2, 3});
    auto mean = std::make_shared<ops::ReduceMean>(image, axes, false);
    mean->output(0).set_names({"embedding"});
    auto model = std::make_shared<ov::Model>(ov::OutputVector{pooled, mean}, ov::ParameterVector{image}, "test");
    ov::save_model(model, kXml, false);
}

// The engine description `vitdeploy build --backend openvino` writes, for the files just saved.
nlohmann::json engine_json(const std::string& backend_version) {
    nlohmann::json files;
    for (const char* name : {"model.openvino.fp32.xml", "model.openvino.fp32.bin"}) {
        const std::string path = std::string(kDir) + "/" + name;
        files[name] = {{"size_bytes", std::filesystem::file_size(path)}, {"sha256", vd::sha256_file(path)}};
    }
    return {
        {"format", "vitdeploy.pyramid"}, {"format_version", 2}, {"recipe", "test_openvino"},
        {"input", {{"name", "image"}, {"layout", "NCHW"}, {"dtype", "float32"}, {"normalised_in_graph", false},
                   {"channels", 3}, {"color", "RGB"}, {"mode", "dynamic"}, {"size_multiple", 8},
                   {"min_hw", {8, 8}}, {"opt_hw", {16, 16}}, {"max_hw", {32, 24}},
                   {"batch", {{"min", 1}, {"opt", 1}, {"max", 2}}}, {"mean", {0.5, 0.5, 0.5}},
                   {"std", {0.5, 0.5, 0.5}}, {"pixel_scale", 255.0}}},
        {"outputs", {{{"name", "stride8"}, {"kind", "feature"}, {"index", 0}, {"channels", 3}, {"stride", 8},
                      {"layout", "NCHW"}},
                     {{"name", "embedding"}, {"kind", "embedding"}, {"index", nullptr}, {"channels", 3},
                      {"stride", nullptr}, {"layout", "NC"}}}},
        {"engine", {{"file", "model.openvino.fp32.xml"}, {"backend", "openvino"},
                    {"backend_version", backend_version}, {"precision", "fp32"}, {"device", "CPU"},
                    {"inference_precision", "f32"},
                    {"profile", {{"image", {{"min", {1, 3, 8, 8}}, {"opt", {1, 3, 16, 16}}, {"max", {2, 3, 32, 24}}}}}},
                    {"io", {{"image", {{"mode", "input"}, {"dtype", "float32"}, {"shape", {-1, 3, -1, -1}}}},
                            {"stride8", {{"mode", "output"}, {"dtype", "float32"}, {"shape", {-1, 3, -1, -1}}}},
                            {"embedding", {{"mode", "output"}, {"dtype", "float32"}, {"shape", {-1, 3}}}}}},
                    {"files", files}, {"build_seconds", 0.1}}}};
}

vd::Description parsed(const nlohmann::json& document) {
    return vd::parse_description(document.dump(), std::string(kXml) + ".json");
}

// A 2x3x16x24 input whose values follow a formula, and the pooled values that formula gives.
vd::InputTensor ramp() {
    std::vector<float> values(2 * 3 * 16 * 24);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 97) / 97.0f - 0.5f;
    return {{2, 3, 16, 24}, values};
}

double window_mean(const std::vector<float>& x, int n, int c, int y0, int x0, int size_y, int size_x) {
    double sum = 0;
    for (int y = y0; y < y0 + size_y; ++y)
        for (int xx = x0; xx < x0 + size_x; ++xx) sum += x[((n * 3 + c) * 16 + y) * 24 + xx];
    return sum / (size_y * size_x);
}

void test_runs_and_matches_hand_computation() {
    const vd::Description description = parsed(engine_json(vd::openvino_backend().version));
    const vd::Backend& backend = vd::backend_for(*description.engine);
    CHECK(backend.name == "openvino");
    const vd::InputTensor input = ramp();
    const std::vector<vd::Tensor> outputs = backend.open(description, kXml, false)->infer(input);
    CHECK(outputs.size() == 2);
    CHECK(outputs[0].shape == std::vector<int64_t>({2, 3, 2, 3}) && outputs[1].shape == std::vector<int64_t>({2, 3}));
    const auto& x = std::get<std::vector<float>>(input.data);
    double worst = 0;
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 3; ++c) {
            for (int y = 0; y < 2; ++y)
                for (int xx = 0; xx < 3; ++xx)
                    worst = std::max(worst, std::fabs(outputs[0].data[((n * 3 + c) * 2 + y) * 3 + xx] -
                                                      window_mean(x, n, c, y * 8, xx * 8, 8, 8)));
            worst = std::max(worst, std::fabs(outputs[1].data[n * 3 + c] - window_mean(x, n, c, 0, 0, 16, 24)));
        }
    CHECK(worst < 1e-5);
}

void test_refuses() {
    const std::string version = vd::openvino_backend().version;
    CHECK_THROWS(vd::backend_for(*parsed(engine_json("2999.0.0")).engine),
                 "the engine was built with OpenVINO 2999.0.0 but this vitdeploy_demo runs OpenVINO " + version +
                     ": expected 2999.0.0 or newer");
    vd::backend_for(*parsed(engine_json("2020.1.0")).engine);  // older engines load

    // The description names an output the IR does not have.
    nlohmann::json renamed = engine_json(version);
    renamed["outputs"][1]["name"] = "pooled";
    renamed["engine"]["io"]["pooled"] = renamed["engine"]["io"]["embedding"];
    renamed["engine"]["io"].erase("embedding");
    CHECK_THROWS(vd::openvino_backend().open(parsed(renamed), kXml, false),
                 "model.openvino.fp32.xml has inputs [image] and outputs [stride8, embedding]: expected inputs "
                 "[image] and outputs [stride8, pooled] as " + std::string(kXml) + ".json says");
    // ... or records another dtype for the input.
    nlohmann::json uint8_input = engine_json(version);
    uint8_input["input"]["dtype"] = "uint8";
    uint8_input["input"]["layout"] = "NHWC";
    uint8_input["input"]["normalised_in_graph"] = true;
    uint8_input["engine"]["io"]["image"] = {{"mode", "input"}, {"dtype", "uint8"}, {"shape", {-1, -1, -1, 3}}};
    uint8_input["engine"]["profile"]["image"] = {
        {"min", {1, 8, 8, 3}}, {"opt", {1, 16, 16, 3}}, {"max", {2, 32, 24, 3}}};
    CHECK_THROWS(vd::openvino_backend().open(parsed(uint8_input), kXml, false),
                 "model.openvino.fp32.xml input 'image' is float32 -1x3x-1x-1: expected uint8 -1x-1x-1x3");

    // OpenVINO itself refuses a shape outside the profile it was bounded to, in one line.
    const vd::Description description = parsed(engine_json(version));
    auto runtime = vd::openvino_backend().open(description, kXml, false);
    CHECK_THROWS(runtime->infer({{1, 3, 40, 8}, std::vector<float>(3 * 40 * 8)}), "OpenVINO inference failed: ");
}

void test_bf16_compiles_and_runs() {
    nlohmann::json bf16 = engine_json(vd::openvino_backend().version);
    bf16["engine"]["inference_precision"] = "bf16";
    const vd::InputTensor input = ramp();
    const auto outputs = vd::openvino_backend().open(parsed(bf16), kXml, false)->infer(input);
    const auto& x = std::get<std::vector<float>>(input.data);
    CHECK(std::fabs(outputs[1].data[0] - window_mean(x, 0, 0, 0, 0, 16, 24)) < 1e-2);  // bf16 keeps ~3 digits
}

}  // namespace

int main() {
    std::filesystem::create_directories(kDir);
    save_model();
    try {
        test_runs_and_matches_hand_computation();
        test_refuses();
        test_bf16_compiles_and_runs();
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "FAIL: unexpected error: %s\n", exc.what());
        ++vitdeploy_demo_tests::failures;
    }
    if (vitdeploy_demo_tests::failures) std::fprintf(stderr, "%d check(s) failed\n", vitdeploy_demo_tests::failures);
    else std::puts("all openvino runtime checks passed");
    return vitdeploy_demo_tests::failures ? 1 : 0;
}
