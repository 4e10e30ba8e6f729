// vitdeploy_demo_tool: the demo's preprocessing and pyramid consumers without TensorRT, so they can be
// checked against Python (tests/test_cpp_demo.py) on any machine.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"
#include "pyramid.hpp"

namespace vd = vitdeploy_demo;

namespace {

const char kUsage[] =
    "usage: vitdeploy_demo_tool preprocess DESCRIPTION IMAGE OUT.npy\n"
    "       vitdeploy_demo_tool consume DESCRIPTION IMAGE PYRAMID_DIR OUT_DIR\n"
    "DESCRIPTION is vitdeploy.json or an engine's .engine.json; PYRAMID_DIR holds <output name>.npy per output.\n";

int run_preprocess(const std::string& description_path, const std::string& image_path, const std::string& out_path) {
    const vd::Description description = vd::load_description(description_path);
    const vd::Image image = vd::load_image(image_path);
    const vd::InputTensor input = vd::preprocess(image, description.input);
    vd::write_npy(out_path, input);
    std::printf("image %dx%d -> input %s %s (%s)\n", image.height, image.width, vd::shape_string(input.shape).c_str(),
                description.input.dtype(), description.input.mode.c_str());
    return 0;
}

int run_consume(const std::string& description_path, const std::string& image_path, const std::string& pyramid_dir,
                const std::string& out_dir) {
    const vd::Description description = vd::load_description(description_path);
    const vd::Image image = vd::load_image(image_path);
    const auto hw = vd::input_hw(image.height, image.width, description.input);
    std::vector<vd::Tensor> levels;
    for (const vd::OutputSpec& output : description.outputs)
        levels.push_back(vd::read_npy((std::filesystem::path(pyramid_dir) / (output.name + ".npy")).string()));
    const int64_t batch = levels.front().shape.empty() ? 0 : levels.front().shape[0];
    std::fputs(vd::stats_table(vd::consume_pyramid(description, image, hw, batch, levels, out_dir)).c_str(), stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    try {
        if (args.size() == 4 && args[0] == "preprocess") return run_preprocess(args[1], args[2], args[3]);
        if (args.size() == 5 && args[0] == "consume") return run_consume(args[1], args[2], args[3], args[4]);
    } catch (const std::exception& exc) {
        std::fprintf(stderr, "vitdeploy_demo_tool: error: %s\n", exc.what());
        return 1;
    }
    std::fputs(kUsage, stderr);
    return 2;
}
