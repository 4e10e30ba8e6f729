// Unit tests of vitdeploy_demo_core (run by ctest). Python parity is tested in tests/test_cpp_demo.py.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <variant>

#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "pyramid.hpp"

namespace vd = vitdeploy_demo;

namespace {

int failures = 0;

void check(bool ok, const std::string& what, int line) {
    if (!ok) {
        std::fprintf(stderr, "FAIL line %d: %s\n", line, what.c_str());
        ++failures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)
#define CHECK_NEAR(a, b, tol) check(std::fabs((a) - (b)) <= (tol), #a " ~= " #b, __LINE__)

// Runs `body`, expecting a vd::Error whose message contains `needle`.
void check_throws(const std::function<void()>& body, const std::string& needle, int line) {
    try {
        body();
    } catch (const vd::Error& exc) {
        check(std::string(exc.what()).find(needle) != std::string::npos,
              "message '" + std::string(exc.what()) + "' mentions '" + needle + "'", line);
        return;
    }
    check(false, "expected an error mentioning '" + needle + "'", line);
}
#define CHECK_THROWS(body, needle) check_throws([&] { body; }, needle, __LINE__)

const std::string kSidecar = R"({
  "format": "vitdeploy.pyramid", "format_version": 1, "recipe": "test",
  "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 3, "color": "RGB",
            "mode": "dynamic", "size_multiple": 32, "min_hw": [64, 64], "opt_hw": [128, 128],
            "max_hw": [256, 192], "batch": {"min": 1, "opt": 1, "max": 4},
            "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0], "pixel_scale": 255.0},
  "outputs": [{"name": "stride8", "kind": "feature", "index": 0, "channels": 2, "stride": 8, "layout": "NCHW"},
              {"name": "embedding", "kind": "embedding", "index": null, "channels": 5, "stride": null, "layout": "NC"}],
  "engine": {"file": "m.engine", "backend": "tensorrt", "backend_version": "11.1.0", "precision": "fp16",
             "profile": {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [4, 3, 256, 192]}},
             "size_bytes": 42}
})";

// `text` with the first `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
    return text.replace(text.find(from), from.size(), to);
}

// kSidecar as --bake-preprocessing exports it: uint8 NHWC input, profile shapes in NHWC.
const std::string kBakedSidecar = replaced(
    replaced(kSidecar, R"("layout": "NCHW", "dtype": "float32")",
             R"("layout": "NHWC", "dtype": "uint8", "normalised_in_graph": true)"),
    R"("min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [4, 3, 256, 192])",
    R"("min": [1, 64, 64, 3], "opt": [1, 128, 128, 3], "max": [4, 256, 192, 3])");

void test_sidecar() {
    const vd::Sidecar s = vd::parse_sidecar(kSidecar, "t.json");
    CHECK(s.input.name == "image" && s.input.mode == "dynamic" && s.input.size_multiple == 32);
    CHECK(!s.input.normalised_in_graph && s.input.layout() == std::string("NCHW"));  // missing means false
    CHECK(s.input.max_hw[0] == 256 && s.input.max_hw[1] == 192 && s.input.batch_max == 4);
    CHECK(s.input.mean[1] == 0.25f && s.input.std[0] == 0.5f && s.input.pixel_scale == 255.0f);
    CHECK(s.outputs.size() == 2 && s.outputs[0].stride == 8 && s.outputs[1].stride == 0);
    CHECK(s.engine && s.engine->profile_max == std::vector<int64_t>({4, 3, 256, 192}) && s.engine->size_bytes == 42);
    CHECK(vd::output_shape(s.outputs[0], 1, 64, 96) == std::vector<int64_t>({1, 2, 8, 12}));
    CHECK(vd::output_shape(s.outputs[1], 2, 64, 96) == std::vector<int64_t>({2, 5}));
    std::string broken = kSidecar;
    broken.replace(broken.find("\"recipe\""), 8, "\"recipy\"");
    CHECK_THROWS(vd::parse_sidecar(broken, "t.json"), "no 'recipe' field");
    CHECK_THROWS(vd::parse_sidecar("{", "t.json"), "not valid JSON");
    CHECK_THROWS(vd::load_sidecar("no_such_sidecar.json"), "cannot open no_such_sidecar.json");
    CHECK((vd::shape_hw(s.input, {2, 3, 64, 96}) == std::array<int, 2>{64, 96}));
}

void test_baked_sidecar() {
    const vd::Sidecar s = vd::parse_sidecar(kBakedSidecar, "t.json");
    CHECK(s.input.normalised_in_graph && s.input.layout() == std::string("NHWC"));
    CHECK(s.input.dtype() == std::string("uint8"));
    CHECK(s.engine && s.engine->profile_max == std::vector<int64_t>({4, 256, 192, 3}));
    CHECK((vd::shape_hw(s.input, {2, 64, 96, 3}) == std::array<int, 2>{64, 96}));
    const std::string explicit_false = replaced(kSidecar, R"("dtype": "float32")",
                                                R"("dtype": "float32", "normalised_in_graph": false)");
    CHECK(!vd::parse_sidecar(explicit_false, "t.json").input.normalised_in_graph);

    const std::string expected = ": expected float32 NCHW (normalised_in_graph false) or uint8 NHWC";
    CHECK_THROWS(vd::parse_sidecar(replaced(kSidecar, R"("float32")", R"("uint8")"), "t.json"),
                 "t.json input is uint8 NCHW, 3 channels, normalised_in_graph false" + expected);
    CHECK_THROWS(vd::parse_sidecar(replaced(kBakedSidecar, R"("uint8")", R"("float32")"), "t.json"),
                 "t.json input is float32 NHWC, 3 channels, normalised_in_graph true" + expected);
    CHECK_THROWS(vd::parse_sidecar(replaced(kBakedSidecar, "true", "false"), "t.json"),
                 "is uint8 NHWC, 3 channels, normalised_in_graph false" + expected);
    CHECK_THROWS(vd::parse_sidecar(replaced(kBakedSidecar, "true", R"("yes")"), "t.json"),
                 "field 'normalised_in_graph' has the wrong type");
    CHECK_THROWS(vd::parse_sidecar(replaced(kBakedSidecar, "[4, 256, 192, 3]", "[4, 3, 256, 192]"), "t.json"),
                 "profile: expected NHWC min and max shapes of 4 dimensions with 3 channels");
}

void test_input_hw() {
    vd::InputSpec spec = vd::parse_sidecar(kSidecar, "t.json").input;
    CHECK((vd::input_hw(100, 100, spec) == std::array<int, 2>{96, 96}));
    CHECK((vd::input_hw(112, 80, spec) == std::array<int, 2>{128, 96}));  // halves round up
    CHECK((vd::input_hw(10, 1000, spec) == std::array<int, 2>{64, 192}));  // clamped
    spec.mode = "fixed";
    CHECK((vd::input_hw(1000, 10, spec) == std::array<int, 2>{64, 64}));
}

void test_resize() {
    // torch: interpolate([0, 10], size=4, bilinear, align_corners=False) = [0, 2.5, 7.5, 10]
    const auto row = vd::resize_bilinear({0.0f, 10.0f}, 1, 2, 1, 1, 4);
    CHECK(row == std::vector<float>({0.0f, 2.5f, 7.5f, 10.0f}));
    const auto down = vd::resize_bilinear({0, 10, 20, 30}, 1, 4, 1, 1, 2);  // centres at 0.5 and 2.5
    CHECK(down == std::vector<float>({5.0f, 25.0f}));
    const std::vector<float> constant(5 * 7 * 3, 42.0f);
    for (float v : vd::resize_bilinear(constant, 5, 7, 3, 11, 3)) CHECK(v == 42.0f);
}

void test_preprocess() {
    vd::InputSpec spec = vd::parse_sidecar(kSidecar, "t.json").input;
    spec.mode = "fixed";
    const vd::Image image{1, 1, {255, 51, 0}};
    const vd::InputTensor t = vd::preprocess(image, spec);
    CHECK(t.shape == std::vector<int64_t>({1, 3, 64, 64}) && !t.is_uint8() && t.byte_size() == 3 * 64 * 64 * 4);
    const auto& data = std::get<std::vector<float>>(t.data);
    CHECK(data[0] == 1.0f);                 // (1 - 0.5) / 0.5
    CHECK_NEAR(data[64 * 64], -0.2f, 1e-6f);  // (0.2 - 0.25) / 0.25
    CHECK(data[2 * 64 * 64] == 0.0f);
}

void test_baked_preprocess() {
    vd::InputSpec spec = vd::parse_sidecar(kBakedSidecar, "t.json").input;
    // A valid size already: the pixels pass through as they are, NHWC.
    vd::Image image{64, 96, {}};
    for (int i = 0; i < 64 * 96 * 3; ++i) image.rgb.push_back(static_cast<uint8_t>(i * 7));
    const vd::InputTensor same = vd::preprocess(image, spec);
    CHECK(same.shape == std::vector<int64_t>({1, 64, 96, 3}) && same.is_uint8() && same.byte_size() == 64 * 96 * 3);
    CHECK(std::get<std::vector<uint8_t>>(same.data) == image.rgb);

    // 1x2 -> 1x4 resizes channel 0 (0, 10) to 0, 2.5, 7.5, 10 and channel 1 (1, 2) to 1, 1.25, 1.75, 2:
    // halves round to even, as np.rint does.
    spec.mode = "fixed";
    spec.min_hw = spec.max_hw = {1, 4};
    const vd::InputTensor resized = vd::preprocess({1, 2, {0, 1, 255, 10, 2, 255}}, spec);
    CHECK(resized.shape == std::vector<int64_t>({1, 1, 4, 3}));
    CHECK(std::get<std::vector<uint8_t>>(resized.data) ==
          std::vector<uint8_t>({0, 1, 255, 2, 1, 255, 8, 2, 255, 10, 2, 255}));
}

void test_files() {
    std::filesystem::create_directories("test_core_tmp");
    const vd::Tensor tensor{{2, 1, 3}, {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, -1e7f}};
    vd::write_npy("test_core_tmp/a.npy", tensor);
    const vd::Tensor back = vd::read_npy("test_core_tmp/a.npy");
    CHECK(back.shape == tensor.shape && back.data == tensor.data);
    vd::write_npy("test_core_tmp/b.npy", {{3}, {1, 2, 3}});
    CHECK(vd::read_npy("test_core_tmp/b.npy").shape == std::vector<int64_t>({3}));
    const vd::InputTensor floats{{2, 3}, std::vector<float>{1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, -1e7f}};
    vd::write_npy("test_core_tmp/c.npy", floats);
    const vd::Tensor floats_back = vd::read_npy("test_core_tmp/c.npy");
    CHECK(floats_back.shape == floats.shape && floats_back.data == tensor.data);

    // A uint8 input: dtype '|u1', one byte an element after the header (padded to 128 bytes, as np.save does).
    const vd::InputTensor pixels{{1, 2, 1, 3}, std::vector<uint8_t>{0, 1, 2, 253, 254, 255}};
    vd::write_npy("test_core_tmp/u8.npy", pixels);
    std::ifstream u8_file("test_core_tmp/u8.npy", std::ios::binary);
    const std::string u8_text((std::istreambuf_iterator<char>(u8_file)), std::istreambuf_iterator<char>());
    CHECK(u8_text.size() == 128 + 6 && u8_text.substr(128) == std::string("\x00\x01\x02\xfd\xfe\xff", 6));
    CHECK(u8_text.find("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 1, 3), }") == 10);
    CHECK_THROWS(vd::read_npy("test_core_tmp/u8.npy"), "not a little-endian float32");

    vd::Image image{2, 3, {}};
    for (int i = 0; i < 18; ++i) image.rgb.push_back(static_cast<uint8_t>(i * 14));
    vd::write_png("test_core_tmp/a.png", image);
    const vd::Image loaded = vd::load_image("test_core_tmp/a.png");
    CHECK(loaded.height == 2 && loaded.width == 3 && loaded.rgb == image.rgb);

    std::ofstream("test_core_tmp/not_an_image.png") << "hello";
    CHECK_THROWS(vd::load_image("test_core_tmp/not_an_image.png"), "neither PNG nor JPEG");
    CHECK_THROWS(vd::load_image("test_core_tmp/missing.png"), "does not exist");
    std::ofstream("test_core_tmp/truncated.png", std::ios::binary)
        << std::string("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
    CHECK_THROWS(vd::load_image("test_core_tmp/truncated.png"), "not a readable PNG");
    CHECK_THROWS(vd::read_npy("test_core_tmp/a.png"), "not a .npy file");
}

void test_consumers() {
    const vd::Sidecar sidecar = vd::parse_sidecar(kSidecar, "t.json");
    const vd::LevelStats stats = vd::level_stats(sidecar.outputs[1], {{1, 4}, {1, 2, 3, 4}});
    CHECK(stats.mean == 2.5 && stats.min == 1 && stats.max == 4);
    CHECK_NEAR(stats.std, std::sqrt(1.25), 1e-12);

    // [1, 2, 1, 2]: channel values (3, 4) at the first position, (0, 0) at the second.
    const vd::Tensor level{{1, 2, 1, 2}, {3, 0, 4, 0}};
    const vd::Tensor norm = vd::feature_norm(level);
    CHECK(norm.shape == std::vector<int64_t>({1, 2}) && norm.data == std::vector<float>({5.0f, 0.0f}));

    const vd::Image black{1, 2, std::vector<uint8_t>(6, 0)};
    const vd::Image overlay = vd::heatmap_overlay(black, norm);  // hot left (252,255,164), cold right (0,0,4)
    CHECK(overlay.rgb == std::vector<uint8_t>({126, 128, 82, 0, 0, 2}));

    const vd::Image image{16, 24, std::vector<uint8_t>(16 * 24 * 3, 128)};
    const std::vector<vd::Tensor> levels{{{1, 2, 2, 3}, std::vector<float>(12, 1.0f)}, {{1, 5}, {0, 1, 2, 3, 4}}};
    const auto all = vd::consume_pyramid(sidecar, image, {16, 24}, 1, levels, "test_core_tmp/out");
    CHECK(all.size() == 2 && all[1].mean == 2.0);
    CHECK(std::filesystem::exists("test_core_tmp/out/stride8_heatmap.png"));
    CHECK(vd::read_npy("test_core_tmp/out/stride8_norm.npy").data == std::vector<float>(6, std::sqrt(2.0f)));
    CHECK(vd::stats_table(all).find("embedding    1x5") != std::string::npos);
    const std::vector<vd::Tensor> wrong{levels[0], {{1, 4}, {0, 1, 2, 3}}};
    CHECK_THROWS(vd::consume_pyramid(sidecar, image, {16, 24}, 1, wrong, "test_core_tmp/out"),
                 "output 'embedding' has shape 1x4: expected 1x5");
}

}  // namespace

int main() {
    test_sidecar();
    test_baked_sidecar();
    test_input_hw();
    test_resize();
    test_preprocess();
    test_baked_preprocess();
    test_files();
    test_consumers();
    if (failures) std::fprintf(stderr, "%d check(s) failed\n", failures);
    else std::puts("all core checks passed");
    return failures ? 1 : 0;
}
