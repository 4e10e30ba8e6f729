// Unit tests of vitdeploy_demo_core (run by ctest). Python parity is tested in tests/test_cpp_demo.py.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <variant>

#include "engine_files.hpp"
#include "check.hpp"
#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "sam2.hpp"
#include "pyramid.hpp"

namespace vd = vitdeploy_demo;

namespace {

const std::string kDescription = R"({
  "format": "vitdeploy.pyramid", "format_version": 2, "recipe": "test",
  "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 3, "color": "RGB",
            "mode": "dynamic", "size_multiple": 32, "min_hw": [64, 64], "opt_hw": [128, 128],
            "max_hw": [256, 192], "batch": {"min": 1, "opt": 1, "max": 4},
            "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0], "pixel_scale": 255.0},
  "outputs": [{"name": "stride8", "kind": "feature", "index": 0, "channels": 2, "stride": 8, "layout": "NCHW"},
              {"name": "embedding", "kind": "embedding", "index": null, "channels": 5, "stride": null, "layout": "NC"}],
  "engine": {"file": "m.xml", "backend": "openvino", "backend_version": "2026.4.1", "precision": "fp32",
             "device": "CPU", "inference_precision": "f32",
             "profile": {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [4, 3, 256, 192]}},
             "io": {"image": {"mode": "input", "dtype": "float32", "shape": [-1, 3, -1, -1]},
                    "stride8": {"mode": "output", "dtype": "float32", "shape": [-1, 2, -1, -1]},
                    "embedding": {"mode": "output", "dtype": "float32", "shape": [-1, 5]}},
             "files": {
             "m.xml": {"size_bytes": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
             "m.bin": {"size_bytes": 0, "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}},
             "build_seconds": 0.5}
})";

// `text` with the first `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
    return text.replace(text.find(from), from.size(), to);
}

// kDescription as --bake-preprocessing exports it: uint8 NHWC input, profile and input shapes in NHWC.
const std::string kBakedDescription = replaced(
    replaced(replaced(kDescription, R"("layout": "NCHW", "dtype": "float32")",
                      R"("layout": "NHWC", "dtype": "uint8", "normalised_in_graph": true)"),
             R"("min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [4, 3, 256, 192])",
             R"("min": [1, 64, 64, 3], "opt": [1, 128, 128, 3], "max": [4, 256, 192, 3])"),
    R"("dtype": "float32", "shape": [-1, 3, -1, -1])", R"("dtype": "uint8", "shape": [-1, -1, -1, 3])");

// The description checks of the engine section: each edit of kDescription and the error it gives.
void test_engine_section() {
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("format_version": 2)", R"("format_version": 1)"), "t.json"),
                 "t.json is format_version 1: this demo reads version 2; re-export the artifact (and rebuild its "
                 "engines) with a current vitdeploy");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("backend": "openvino")", R"("backend": "onnx")"), "t.json"),
                 "t.json engine backend 'onnx' is unknown: expected aoti, openvino, tensorrt or tensorrt_rtx");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("inference_precision": "f32")",
                                            R"("inference_precision": "f16")"), "t.json"),
                 "inference_precision 'f16': expected f32 or bf16");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("file": "m.xml")", R"("file": "n.xml")"), "t.json"),
                 "'files' does not list the engine file n.xml");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("m.bin")", R"("../m.bin")"), "t.json"),
                 "t.json engine files '../m.bin': expected a file name beside the engine");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"sha256\": \"e3b0", "\"sha256\": \"E3B0"), "t.json"),
                 "64 lower-case hex digits");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("stride8": {"mode": "output", "dtype": "float32")",
                                            R"("stride8": {"mode": "output", "dtype": "float16")"), "t.json"),
                 "t.json engine io 'stride8' is a float16 output of 4 dimensions: expected a float32 output");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("stride8": {"mode")", R"("stride4": {"mode")"), "t.json"),
                 "t.json engine io has no 'stride8' field");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "[-1, 3, -1, -1]", "[-1, 3, 64, -1]"), "t.json"),
                 "input 'image' is -1x3x64x-1 but the profile spans 1x3x64x64..4x3x256x192");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("device": "CPU", )", ""), "t.json"),
                 "t.json engine has no 'device' field");
    CHECK((vd::version_numbers("2026.4.1-22982-e213a147257-releases/2026/4", "x") == std::vector<int>{2026, 4, 1}));
    CHECK((vd::version_numbers("1.7.1.116", "x") == std::vector<int>{1, 7, 1}));
    CHECK_THROWS(vd::version_numbers("custom_build", "the engine's OpenVINO"),
                 "the engine's OpenVINO version 'custom_build' does not start with X.Y.Z");
}

// sha256 against FIPS 180-2's test vectors; truncated, longer, corrupt and missing engine files.
void test_engine_files() {
    std::filesystem::create_directories("test_core_tmp/engine");
    std::ofstream("test_core_tmp/engine/m.xml", std::ios::binary) << "abc";
    std::ofstream("test_core_tmp/engine/m.bin", std::ios::binary);
    CHECK(vd::sha256_file("test_core_tmp/engine/m.xml") ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    std::ofstream("test_core_tmp/engine/long.txt", std::ios::binary) << std::string(1000000, 'a');  // > one chunk
    CHECK(vd::sha256_file("test_core_tmp/engine/long.txt") ==
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    const vd::EngineSpec engine = *vd::parse_description(kDescription, "t.json").engine;
    vd::check_engine_files(engine, "test_core_tmp/engine", "m.xml.json");  // passes
    std::ofstream("test_core_tmp/engine/m.xml", std::ios::binary) << "ab";
    CHECK_THROWS(vd::check_engine_files(engine, "test_core_tmp/engine", "m.xml.json"),
                 "m.xml is 2 bytes, truncated: expected 3 bytes (interrupted copy?); copy it again or rebuild");
    std::ofstream("test_core_tmp/engine/m.xml", std::ios::binary) << "abcd";
    CHECK_THROWS(vd::check_engine_files(engine, "test_core_tmp/engine", "m.xml.json"),
                 "m.xml is 4 bytes, longer than built: expected 3 bytes");
    std::ofstream("test_core_tmp/engine/m.xml", std::ios::binary) << "abd";
    CHECK_THROWS(vd::check_engine_files(engine, "test_core_tmp/engine", "m.xml.json"),
                 "m.xml is corrupt: its sha256 differs from the one recorded at build time");
    std::filesystem::remove("test_core_tmp/engine/m.bin");
    CHECK_THROWS(vd::check_engine_files(engine, "test_core_tmp/engine", "m.xml.json"),
                 "test_core_tmp/engine/m.bin does not exist: m.xml.json lists it as part of the engine");
}

void test_description() {
    const vd::Description s = vd::parse_description(kDescription, "t.json");
    CHECK(s.input.name == "image" && s.input.mode == "dynamic" && s.input.size_multiple == 32);
    CHECK(!s.input.normalised_in_graph && s.input.layout() == std::string("NCHW"));  // missing means false
    CHECK(s.input.max_hw[0] == 256 && s.input.max_hw[1] == 192 && s.input.batch_max == 4);
    CHECK(s.input.mean[1] == 0.25f && s.input.std[0] == 0.5f && s.input.pixel_scale == 255.0f);
    CHECK(s.outputs.size() == 2 && s.outputs[0].stride == 8 && s.outputs[1].stride == 0);
    CHECK(s.engine && s.engine->profile_max == std::vector<int64_t>({4, 3, 256, 192}));
    CHECK(s.engine->files.size() == 2 && s.engine->files[0].name == "m.xml" && s.engine->files[1].size_bytes == 0);
    CHECK(s.engine->io.size() == 3 && s.engine->io[2].name == "embedding" && s.engine->inference_precision == "f32");
    CHECK(s.engine->tensor("stride8").shape == std::vector<int64_t>({-1, 2, -1, -1}));
    CHECK(vd::output_shape(s.outputs[0], 1, 64, 96) == std::vector<int64_t>({1, 2, 8, 12}));
    CHECK(vd::output_shape(s.outputs[1], 2, 64, 96) == std::vector<int64_t>({2, 5}));
    std::string broken = kDescription;
    broken.replace(broken.find("\"recipe\""), 8, "\"recipy\"");
    CHECK_THROWS(vd::parse_description(broken, "t.json"), "no 'recipe' field");
    CHECK_THROWS(vd::parse_description("{", "t.json"), "not valid JSON");
    CHECK_THROWS(vd::load_description("no_such_description.json"), "cannot open no_such_description.json");
    CHECK((vd::shape_hw(s.input, {2, 3, 64, 96}) == std::array<int, 2>{64, 96}));
}

void test_baked_description() {
    const vd::Description s = vd::parse_description(kBakedDescription, "t.json");
    CHECK(s.input.normalised_in_graph && s.input.layout() == std::string("NHWC"));
    CHECK(s.input.dtype() == std::string("uint8"));
    CHECK(s.engine && s.engine->profile_max == std::vector<int64_t>({4, 256, 192, 3}));
    CHECK((vd::shape_hw(s.input, {2, 64, 96, 3}) == std::array<int, 2>{64, 96}));
    const std::string explicit_false = replaced(kDescription, R"("dtype": "float32")",
                                                R"("dtype": "float32", "normalised_in_graph": false)");
    CHECK(!vd::parse_description(explicit_false, "t.json").input.normalised_in_graph);

    const std::string expected = ": expected float32 NCHW (normalised_in_graph false) or uint8 NHWC";
    CHECK_THROWS(vd::parse_description(replaced(kDescription, R"("float32")", R"("uint8")"), "t.json"),
                 "t.json input is uint8 NCHW, 3 channels, normalised_in_graph false" + expected);
    CHECK_THROWS(vd::parse_description(replaced(kBakedDescription, R"("uint8")", R"("float32")"), "t.json"),
                 "t.json input is float32 NHWC, 3 channels, normalised_in_graph true" + expected);
    CHECK_THROWS(vd::parse_description(replaced(kBakedDescription, "true", "false"), "t.json"),
                 "is uint8 NHWC, 3 channels, normalised_in_graph false" + expected);
    CHECK_THROWS(vd::parse_description(replaced(kBakedDescription, "true", R"("yes")"), "t.json"),
                 "field 'normalised_in_graph' has the wrong type");
    CHECK_THROWS(vd::parse_description(replaced(kBakedDescription, "[4, 256, 192, 3]", "[4, 3, 256, 192]"), "t.json"),
                 "profile: expected NHWC min and max shapes of 4 dimensions with 3 channels");
}

void test_input_hw() {
    vd::InputSpec spec = vd::parse_description(kDescription, "t.json").input;
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
    vd::InputSpec spec = vd::parse_description(kDescription, "t.json").input;
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
    vd::InputSpec spec = vd::parse_description(kBakedDescription, "t.json").input;
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
    const vd::Description description = vd::parse_description(kDescription, "t.json");
    const vd::LevelStats stats = vd::level_stats(description.outputs[1], {{1, 4}, {1, 2, 3, 4}});
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
    const auto all = vd::consume_pyramid(description, image, {16, 24}, 1, levels, "test_core_tmp/out");
    CHECK(all.size() == 2 && all[1].mean == 2.0);
    CHECK(std::filesystem::exists("test_core_tmp/out/stride8_heatmap.png"));
    CHECK(vd::read_npy("test_core_tmp/out/stride8_norm.npy").data == std::vector<float>(6, std::sqrt(2.0f)));
    CHECK(vd::stats_table(all).find("embedding    1x5") != std::string::npos);
    const std::vector<vd::Tensor> wrong{levels[0], {{1, 4}, {0, 1, 2, 3}}};
    CHECK_THROWS(vd::consume_pyramid(description, image, {16, 24}, 1, wrong, "test_core_tmp/out"),
                 "output 'embedding' has shape 1x4: expected 1x5");
}

// SAM2's prompts and image side (vitdeploy/sam2 in Python; the demo's masks are compared with it in
// tests/test_cpp_demo.py).
void test_sam2() {
    const vd::Sam2Point point = vd::parse_point("12.5,7,0");
    CHECK(point.x == 12.5f && point.y == 7.0f && point.label == 0);
    CHECK(vd::parse_point("3,4").label == 1);
    CHECK_THROWS(vd::parse_point("3,4,2"), "label 2, expected 1 (foreground) or 0 (background)");
    CHECK_THROWS(vd::parse_point("3;4"), "expected X,Y or X,Y,LABEL");
    CHECK_THROWS(vd::parse_box("1,2,3"), "expected X0,Y0,X1,Y1");
    vd::Sam2Decoder decoder;
    decoder.image_size = 64;
    decoder.max_points = 4;
    const vd::Sam2Prompt prompt = vd::sam2_prompt({{50, 10, 1}}, std::array<float, 4>{0, 0, 100, 20}, 20, 100, decoder);
    CHECK((prompt.labels == std::vector<int32_t>{2, 3, 1}));  // box corners first, as SAM2 concatenates them
    CHECK((prompt.coords == std::vector<float>{0, 0, 64, 64, 32, 32}));
    CHECK_THROWS(vd::sam2_prompt({{101, 0, 1}}, std::nullopt, 20, 100, decoder), "outside the image (100x20)");
    CHECK_THROWS(vd::sam2_prompt({}, std::nullopt, 20, 100, decoder), "no prompt");
    // Pillow's bilinear: upscaling 2 -> 4 is plain interpolation, shrinking 4 -> 2 averages (antialiased).
    const std::vector<float> up = vd::resize_antialiased({0.0f, 1.0f}, 1, 2, 1, 4);
    CHECK_NEAR(up[0], 0.0f, 1e-7f);
    CHECK_NEAR(up[1], 0.25f, 1e-7f);
    CHECK_NEAR(up[3], 1.0f, 1e-7f);
    const std::vector<float> down = vd::resize_antialiased({0.0f, 1.0f, 2.0f, 3.0f}, 1, 4, 1, 2);
    CHECK_NEAR(down[0], 5.0f / 7.0f, 1e-6f);  // Pillow: taps 0, 1, 2 weighted 0.75, 0.75, 0.25 (normalised)
    const vd::Tensor masks = vd::upsample_masks({{2, 1, 2}, {-1, 1, 3, 5}}, 1, 4);
    CHECK((masks.shape == std::vector<int64_t>{2, 1, 4}));
    CHECK((masks.data == std::vector<float>{-1, -0.5f, 0.5f, 1, 3, 3.5f, 4.5f, 5}));
}

}  // namespace

// Hostile descriptions (docs/security.md): each is one line, never a crash, a cast or an allocation it names.
void test_hostile_description() {
    CHECK_THROWS(vd::parse_description(std::string(100000, '[') + std::string(100000, ']'), "t.json"),
                 "nests objects and lists more than 32 deep");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"recipe\": \"test\"", "\"recipe\": \"t\xff\""), "t.json"),
                 "not valid JSON");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"channels\": 3", "\"channels\": \"3\""), "t.json"),
                 "t.json input channels is \"3\": expected an integer 1..64");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"channels\": 3", "\"channels\": true"), "t.json"),
                 "expected an integer 1..64");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "[256, 192]", "[100000, 100000]"), "t.json"),
                 "max_hw: expected [height, width], each 1..16384");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"pixel_scale\": 255.0", "\"pixel_scale\": " +
                                                std::string(5000, '9')), "t.json"),
                 "not valid JSON (a number out of range)");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"stride8\", \"kind\"", "\"../x\", \"kind\""), "t.json"),
                 "t.json output name '../x' is not a plain name");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"size_bytes\": 3", "\"size_bytes\": 1e30"), "t.json"),
                 "size_bytes is 1e+30: expected an integer 0..17592186044416");
    CHECK_THROWS(vd::parse_description(replaced(kDescription, "\"m.bin\"", "\"/etc/passwd\""), "t.json"),
                 "t.json engine files '/etc/passwd': expected a file name beside the engine");
    // A plain name that is a symlink out of the directory is refused before it is sized or hashed.
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / "vitdeploy_demo_hostile";
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "m.xml") << "abc";
    fs::create_symlink("/etc/hostname", dir / "m.bin");
    const vd::EngineSpec engine = *vd::parse_description(kDescription, "t.json").engine;
    CHECK_THROWS(vd::check_engine_files(engine, dir.string(), "t.json"), "is a symbolic link out of");
    fs::remove_all(dir);
}

int main() {
    test_sam2();
    test_description();
    test_baked_description();
    test_engine_section();
    test_engine_files();
    test_input_hw();
    test_resize();
    test_preprocess();
    test_baked_preprocess();
    test_files();
    test_consumers();
    test_hostile_description();
    if (vitdeploy_demo_tests::failures) std::fprintf(stderr, "%d check(s) failed\n", vitdeploy_demo_tests::failures);
    else std::puts("all core checks passed");
    return vitdeploy_demo_tests::failures ? 1 : 0;
}
