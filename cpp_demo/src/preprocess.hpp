// Image -> the input batch an artifact takes (normalised float32 NCHW, or uint8 NHWC pixels), operation for
// operation as vitdeploy/preprocess.py does it.
#pragma once

#include <array>
#include <vector>

#include "image.hpp"
#include "description.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {

// Network input size for an image: the fixed size, or (dynamic) each side rounded to the nearest
// multiple of size_multiple (halves up) and clamped to min_hw..max_hw.
std::array<int, 2> input_hw(int height, int width, const InputSpec& spec);

// Bilinear resize of a float HxWxC array with half-pixel centres and no antialiasing
// (torch interpolate(mode="bilinear", align_corners=False, antialias=False)).
std::vector<float> resize_bilinear(const std::vector<float>& hwc, int height, int width, int channels,
                                   int out_height, int out_width);

// [1, 3, H, W] float32: resize the pixel values, then (pixel / pixel_scale - mean) / std. For an input
// normalised in the graph, [1, H, W, 3] uint8: the resized pixel values rounded half to even (np.rint).
InputTensor preprocess(const Image& image, const InputSpec& spec);

}  // namespace vitdeploy_demo
