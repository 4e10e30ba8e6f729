// NumPy .npy files (little-endian float32, or uint8 for a uint8 input; C order): how the demo hands arrays
// to Python and back.
#pragma once

#include <string>

#include "tensor.hpp"

namespace vitdeploy_demo {

void write_npy(const std::string& path, const Tensor& tensor);
void write_npy(const std::string& path, const InputTensor& input);  // dtype float32 or uint8, as the input's
Tensor read_npy(const std::string& path);

}  // namespace vitdeploy_demo
