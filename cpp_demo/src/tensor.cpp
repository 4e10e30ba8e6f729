#include "tensor.hpp"

namespace vitdeploy_demo {

const void* InputTensor::bytes() const {
    return std::visit([](const auto& values) -> const void* { return values.data(); }, data);
}

size_t InputTensor::byte_size() const {
    return std::visit([](const auto& values) { return values.size() * sizeof(values[0]); }, data);
}

int64_t element_count(const std::vector<int64_t>& shape) {
    int64_t count = 1;
    for (int64_t dim : shape) count *= dim;
    return count;
}

std::string shape_string(const std::vector<int64_t>& shape) {
    std::string text;
    for (size_t i = 0; i < shape.size(); ++i) text += (i ? "x" : "") + std::to_string(shape[i]);
    return text;
}

}  // namespace vitdeploy_demo
