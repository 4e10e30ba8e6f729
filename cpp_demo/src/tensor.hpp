// Dense arrays in C order: float32 for what the network returns and the consumers make, and the input
// batch, which is float32 or uint8 depending on the artifact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace vitdeploy_demo {

struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
};

// The network input: normalised float32 NCHW, or raw uint8 NHWC pixels for an artifact that normalises
// in its graph. The element type follows the data, so the buffer sizes and the .npy dtype do too.
struct InputTensor {
    std::vector<int64_t> shape;
    std::variant<std::vector<float>, std::vector<uint8_t>> data;

    bool is_uint8() const { return std::holds_alternative<std::vector<uint8_t>>(data); }
    const void* bytes() const;
    size_t byte_size() const;
};

// Number of elements a shape holds.
int64_t element_count(const std::vector<int64_t>& shape);

// "1x3x224x224", as the stats table prints shapes.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace vitdeploy_demo
