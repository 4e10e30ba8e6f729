// Consuming a feature pyramid: per-level statistics, feature-norm maps and heatmap pictures.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "image.hpp"
#include "description.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {

struct LevelStats {
    std::string name;
    std::vector<int64_t> shape;
    int stride = 0;  // 0 for the embedding
    double mean = 0, std = 0, min = 0, max = 0;  // over the whole tensor; std is the population std
};

LevelStats level_stats(const OutputSpec& output, const Tensor& level);

// [h, w]: the L2 norm over channels of batch item 0 of an NCHW level (where the backbone "fires").
Tensor feature_norm(const Tensor& level);

// The norm map min-max scaled to 0..1, resized bilinearly to the image, coloured with an inferno-like
// map and blended 50/50 over the image.
Image heatmap_overlay(const Image& image, const Tensor& norm);

// The stats as an aligned text table, one level a line.
std::string stats_table(const std::vector<LevelStats>& stats);

// Checks every level's shape against the description for a batch of `batch` inputs of `input_hw`,
// then writes to out_dir: stats.json, and for each feature level <name>_norm.npy and
// <name>_heatmap.png. `levels` are in the description's output order.
std::vector<LevelStats> consume_pyramid(const Description& description, const Image& image, std::array<int, 2> input_hw,
                                        int64_t batch, const std::vector<Tensor>& levels, const std::string& out_dir);

}  // namespace vitdeploy_demo
