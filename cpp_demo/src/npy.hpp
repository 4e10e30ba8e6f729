// NumPy .npy files (little-endian float32, C order): how the demo hands arrays to Python and back.
#pragma once

#include <string>

#include "tensor.hpp"

namespace vitdeploy_demo {

void write_npy(const std::string& path, const Tensor& tensor);
Tensor read_npy(const std::string& path);

}  // namespace vitdeploy_demo
