// The AOTInductor runtime behind vitdeploy_demo's Runtime interface, on a tiny package compiled by the torch it
// links (tests/make_aoti_package.py, ctest fixture aoti_package) and described as `vitdeploy build --backend aoti`
// describes engines. Exported timm models: tests/test_cpp_demo.py.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "check.hpp"
#include "engine_files.hpp"
#include "error.hpp"
#include "runtime.hpp"

namespace vd = vitdeploy_demo;

namespace {

const char kPackage[] = "test_aoti_tmp/model.aoti.fp32.pt2";

nlohmann::json engine_json(const std::string& backend_version, const std::string& device = "cpu") {
    nlohmann::json files;
    files["model.aoti.fp32.pt2"] = {{"size_bytes", std::filesystem::file_size(kPackage)},
                                    {"sha256", vd::sha256_file(kPackage)}};
    return {
        {"format", "vitdeploy.pyramid"}, {"format_version", 2}, {"recipe", "test_aoti"},
        {"input", {{"name", "image"}, {"layout", "NCHW"}, {"dtype", "float32"}, {"normalised_in_graph", false},
                   {"channels", 3}, {"color", "RGB"}, {"mode", "dynamic"}, {"size_multiple", 8},
                   {"min_hw", {8, 8}}, {"opt_hw", {16, 16}}, {"max_hw", {32, 32}},
                   {"batch", {{"min", 1}, {"opt", 1}, {"max", 2}}}, {"mean", {0.5, 0.5, 0.5}},
                   {"std", {0.5, 0.5, 0.5}}, {"pixel_scale", 255.0}}},
        {"outputs", {{{"name", "stride8"}, {"kind", "feature"}, {"index", 0}, {"channels", 3}, {"stride", 8},
                      {"layout", "NCHW"}},
                     {{"name", "embedding"}, {"kind", "embedding"}, {"index", nullptr}, {"channels", 3},
                      {"stride", nullptr}, {"layout", "NC"}}}},
        {"engine", {{"file", "model.aoti.fp32.pt2"}, {"backend", "aoti"}, {"backend_version", backend_version},
                    {"precision", "fp32"}, {"device", device},
                    {"profile", {{"image", {{"min", {1, 3, 8, 8}}, {"opt", {1, 3, 16, 16}}, {"max", {2, 3, 32, 32}}}}}},
                    {"io", {{"image", {{"mode", "input"}, {"dtype", "float32"}, {"shape", {-1, 3, -1, -1}}}},
                            {"stride8", {{"mode", "output"}, {"dtype", "float32"}, {"shape", {-1, 3, -1, -1}}}},
                            {"embedding", {{"mode", "output"}, {"dtype", "float32"}, {"shape", {-1, 3}}}}}},
                    {"files", files}, {"build_seconds", 0.1}}}};
}

vd::Description parsed(const nlohmann::json& document) {
    return vd::parse_description(document.dump(), std::string(kPackage) + ".json");
}

double window_mean(const std::vector<float>& x, int n, int c, int y0, int x0, int size_y, int size_x) {
    double sum = 0;
    for (int y = y0; y < y0 + size_y; ++y)
        for (int xx = x0; xx < x0 + size_x; ++xx) sum += x[((n * 3 + c) * 16 + y) * 24 + xx];
    return sum / (size_y * size_x);
}

void test_runs_and_matches_hand_computation() {
    const vd::Description description = parsed(engine_json(vd::aoti_backend().version));
    const vd::Backend& backend = vd::backend_for(*description.engine);
    CHECK(backend.name == "aoti");
    std::vector<float> values(2 * 3 * 16 * 24);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 97) / 97.0f - 0.5f;
    const std::vector<vd::Tensor> outputs = backend.open(description, kPackage, false)->infer({{2, 3, 16, 24}, values});
    CHECK(outputs.size() == 2);
    CHECK(outputs[0].shape == std::vector<int64_t>({2, 3, 2, 3}) && outputs[1].shape == std::vector<int64_t>({2, 3}));
    double worst = 0;
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 3; ++c) {
            for (int y = 0; y < 2; ++y)
                for (int xx = 0; xx < 3; ++xx)
                    worst = std::max(worst, std::fabs(outputs[0].data[((n * 3 + c) * 2 + y) * 3 + xx] -
                                                      window_mean(values, n, c, y * 8, xx * 8, 8, 8)));
            worst = std::max(worst, std::fabs(outputs[1].data[n * 3 + c] - window_mean(values, n, c, 0, 0, 16, 24)));
        }
    CHECK(worst < 1e-5);
}

void test_refuses() {
    const std::string version = vd::aoti_backend().version;
    CHECK_THROWS(vd::backend_for(*parsed(engine_json("2.0.0")).engine),
                 "the engine was compiled by torch 2.0.0 but this vitdeploy_demo runs libtorch " + version +
                     ": expected the same release");
    CHECK_THROWS(vd::backend_for(*parsed(engine_json(version, "cuda")).engine),
                 "the engine was compiled for cuda but this vitdeploy_demo runs AOTInductor packages on the CPU");
}

}  // namespace

int main() {
    try {
        test_runs_and_matches_hand_computation();
        test_refuses();
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "FAIL: unexpected error: %s\n", exc.what());
        ++vitdeploy_demo_tests::failures;
    }
    if (vitdeploy_demo_tests::failures) std::fprintf(stderr, "%d check(s) failed\n", vitdeploy_demo_tests::failures);
    else std::puts("all aoti runtime checks passed");
    return vitdeploy_demo_tests::failures ? 1 : 0;
}
