// SAM2's prompts and masks around the decoder graph (decoder.onnx / its OpenVINO engine), as
// vitdeploy/sam2 does them in Python: SAM2's preprocessing (antialiased bilinear resize, as Pillow's float
// resize and torchvision's Resize(antialias=True)), prompts in the S x S frame, masks upsampled to the
// image's size and thresholded, PNG overlays.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "description.hpp"
#include "image.hpp"
#include "tensor.hpp"

namespace vitdeploy_demo {

// What the demo needs of decoder.json (format vitdeploy.sam2_decoder).
struct Sam2Decoder {
    int image_size = 0;
    int mask_size = 0;  // the low-resolution masks and mask_input are mask_size x mask_size
    int max_points = 0;
    float mask_threshold = 0.0f;
    std::string encoder_weights_sha256;
};

Sam2Decoder load_sam2_decoder(const std::string& path);

struct Sam2Point {
    float x = 0, y = 0;
    int label = 1;  // 1 foreground, 0 background
};

// "X,Y" or "X,Y,LABEL" (--point); "X0,Y0,X1,Y1" (--box). Throw Error with the expected form.
Sam2Point parse_point(const std::string& text);
std::array<float, 4> parse_box(const std::string& text);

// The decoder's point inputs: [1, N, 2] coordinates in the S x S frame and [1, N] labels, a box's corners
// first (labels 2, 3). Prompts outside the image, a reversed box, no prompt: one-line errors.
struct Sam2Prompt {
    std::vector<float> coords;
    std::vector<int32_t> labels;
};
Sam2Prompt sam2_prompt(const std::vector<Sam2Point>& points, const std::optional<std::array<float, 4>>& box,
                       int height, int width, const Sam2Decoder& decoder);

// Pillow's bilinear resize of one float plane (antialiased when it shrinks): a horizontal then a vertical pass
// with normalised triangle weights, accumulated in double.
std::vector<float> resize_antialiased(const std::vector<float>& plane, int height, int width, int out_height,
                                      int out_width);

// [1, 3, S, S]: pixels / 255 resized to S x S (antialiased), then (x - mean) / std.
InputTensor sam2_input(const Image& image, int size, const InputSpec& spec);

// [C, h, w] low-resolution logits -> [C, H, W] (bilinear, half-pixel centres, as F.interpolate).
Tensor upsample_masks(const Tensor& low_res, int height, int width);

// The image with the mask's pixels (logit > threshold) tinted.
Image mask_overlay(const Image& image, const float* logits, float threshold);

}  // namespace vitdeploy_demo
