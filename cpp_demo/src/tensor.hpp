// A dense float32 array in C order: what preprocessing produces and the pyramid levels are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vitdeploy_demo {

struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
};

// Number of elements a shape holds.
int64_t element_count(const std::vector<int64_t>& shape);

// "1x3x224x224", as the stats table prints shapes.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace vitdeploy_demo
