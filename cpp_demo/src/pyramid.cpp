#include "pyramid.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "npy.hpp"
#include "preprocess.hpp"

namespace vitdeploy_demo {
namespace {

// matplotlib's inferno at 0, 1/4, 1/2, 3/4, 1; linear in between.
constexpr float kInferno[5][3] = {{0, 0, 4}, {87, 16, 110}, {188, 55, 84}, {249, 142, 9}, {252, 255, 164}};
constexpr float kBlend = 0.5f;

}  // namespace

LevelStats level_stats(const OutputSpec& output, const Tensor& level) {
    LevelStats stats{output.name, level.shape, output.stride};
    if (level.data.empty()) throw Error("output '" + output.name + "' is empty");
    double sum = 0;
    stats.min = stats.max = level.data[0];
    for (float v : level.data) {
        sum += v;
        stats.min = std::min<double>(stats.min, v);
        stats.max = std::max<double>(stats.max, v);
    }
    stats.mean = sum / static_cast<double>(level.data.size());
    double squares = 0;
    for (float v : level.data) squares += (v - stats.mean) * (v - stats.mean);
    stats.std = std::sqrt(squares / static_cast<double>(level.data.size()));
    return stats;
}

Tensor feature_norm(const Tensor& level) {
    const int64_t channels = level.shape.at(1), height = level.shape.at(2), width = level.shape.at(3);
    const int64_t plane = height * width;
    std::vector<double> squares(static_cast<size_t>(plane), 0.0);
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < plane; ++i) {
            const double v = level.data[static_cast<size_t>(c * plane + i)];
            squares[i] += v * v;
        }
    Tensor norm{{height, width}, std::vector<float>(static_cast<size_t>(plane))};
    for (int64_t i = 0; i < plane; ++i) norm.data[i] = static_cast<float>(std::sqrt(squares[i]));
    return norm;
}

Image heatmap_overlay(const Image& image, const Tensor& norm) {
    const auto [lo, hi] = std::minmax_element(norm.data.begin(), norm.data.end());
    std::vector<float> scaled(norm.data.size(), 0.0f);
    if (*hi > *lo)
        for (size_t i = 0; i < scaled.size(); ++i) scaled[i] = (norm.data[i] - *lo) / (*hi - *lo);
    const std::vector<float> heat = resize_bilinear(scaled, static_cast<int>(norm.shape[0]),
                                                    static_cast<int>(norm.shape[1]), 1, image.height, image.width);
    Image out{image.height, image.width, std::vector<uint8_t>(image.rgb.size())};
    for (size_t i = 0; i < heat.size(); ++i) {
        const float v = std::clamp(heat[i], 0.0f, 1.0f) * 4.0f;
        const int k = std::min(static_cast<int>(v), 3);
        const float f = v - static_cast<float>(k);
        for (int c = 0; c < 3; ++c) {
            const float color = kInferno[k][c] * (1.0f - f) + kInferno[k + 1][c] * f;
            const float blended = (1.0f - kBlend) * static_cast<float>(image.rgb[i * 3 + c]) + kBlend * color;
            out.rgb[i * 3 + c] = static_cast<uint8_t>(std::clamp(std::lround(blended), 0L, 255L));
        }
    }
    return out;
}

std::string stats_table(const std::vector<LevelStats>& stats) {
    char line[256];
    std::snprintf(line, sizeof(line), "%-12s %-18s %6s %12s %12s %12s %12s\n", "level", "shape", "stride", "mean",
                  "std", "min", "max");
    std::string table = line;
    for (const LevelStats& s : stats) {
        const std::string stride = s.stride ? std::to_string(s.stride) : "-";
        std::snprintf(line, sizeof(line), "%-12s %-18s %6s %12.6f %12.6f %12.6f %12.6f\n", s.name.c_str(),
                      shape_string(s.shape).c_str(), stride.c_str(), s.mean, s.std, s.min, s.max);
        table += line;
    }
    return table;
}

std::vector<LevelStats> consume_pyramid(const Description& description, const Image& image, std::array<int, 2> input_hw,
                                        int64_t batch, const std::vector<Tensor>& levels, const std::string& out_dir) {
    std::filesystem::create_directories(out_dir);
    const std::filesystem::path dir(out_dir);
    nlohmann::json report = {{"image_hw", {image.height, image.width}}, {"input_hw", input_hw},
                             {"levels", nlohmann::json::array()}};
    std::vector<LevelStats> all;
    for (size_t i = 0; i < description.outputs.size(); ++i) {
        const OutputSpec& output = description.outputs[i];
        const std::vector<int64_t> expected = output_shape(output, batch, input_hw[0], input_hw[1]);
        if (levels.at(i).shape != expected)
            throw Error("output '" + output.name + "' has shape " + shape_string(levels[i].shape) + ": expected " +
                        shape_string(expected) + " from the description");
        const LevelStats stats = level_stats(output, levels[i]);
        nlohmann::json entry = {{"name", stats.name}, {"shape", stats.shape},   {"mean", stats.mean},
                                {"std", stats.std},   {"min", stats.min},       {"max", stats.max},
                                {"stride", nullptr},  {"heatmap", nullptr}};
        if (output.kind == "position") entry["stride"] = output.stride;  // saved, no heatmap: it is no feature
        if (output.kind == "feature") {
            const Tensor norm = feature_norm(levels[i]);
            write_npy((dir / (output.name + "_norm.npy")).string(), norm);
            write_png((dir / (output.name + "_heatmap.png")).string(), heatmap_overlay(image, norm));
            entry["stride"] = output.stride;
            entry["heatmap"] = output.name + "_heatmap.png";
        }
        report["levels"].push_back(entry);
        all.push_back(stats);
    }
    std::ofstream json_file(dir / "stats.json");
    json_file << report.dump(2) << "\n";
    if (!json_file) throw Error("cannot write " + (dir / "stats.json").string());
    return all;
}

}  // namespace vitdeploy_demo
