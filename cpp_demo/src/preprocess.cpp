// Every float operation here is written in the order vitdeploy/preprocess.py performs it in numpy
// float32 (and the library is built with -ffp-contract=off), so both produce the same numbers.
#include "preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

namespace vitdeploy_demo {
namespace {

int round_to_multiple(int value, int multiple) {
    return std::max(multiple, (value + multiple / 2) / multiple * multiple);
}

struct Taps {
    std::vector<int> lo, hi;
    std::vector<float> w_lo, w_hi;
};

// Source indices and weights along one axis (half-pixel centres, edge-clamped).
Taps axis_taps(int in_size, int out_size) {
    Taps taps;
    const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
    for (int d = 0; d < out_size; ++d) {
        const float src = std::max(scale * (static_cast<float>(d) + 0.5f) - 0.5f, 0.0f);
        const int lo = std::min(static_cast<int>(src), in_size - 1);
        const float w_hi = src - static_cast<float>(lo);
        taps.lo.push_back(lo);
        taps.hi.push_back(lo < in_size - 1 ? lo + 1 : lo);
        taps.w_lo.push_back(1.0f - w_hi);
        taps.w_hi.push_back(w_hi);
    }
    return taps;
}

}  // namespace

std::array<int, 2> input_hw(int height, int width, const InputSpec& spec) {
    if (spec.mode == "fixed") return spec.min_hw;
    const int h = std::clamp(round_to_multiple(height, spec.size_multiple), spec.min_hw[0], spec.max_hw[0]);
    const int w = std::clamp(round_to_multiple(width, spec.size_multiple), spec.min_hw[1], spec.max_hw[1]);
    return {h, w};
}

std::vector<float> resize_bilinear(const std::vector<float>& hwc, int height, int width, int channels,
                                   int out_height, int out_width) {
    if (height == out_height && width == out_width) return hwc;
    const Taps ty = axis_taps(height, out_height);
    const Taps tx = axis_taps(width, out_width);
    std::vector<float> out(static_cast<size_t>(out_height) * out_width * channels);
    auto at = [&](int y, int x, int c) { return hwc[(static_cast<size_t>(y) * width + x) * channels + c]; };
    for (int y = 0; y < out_height; ++y) {
        for (int x = 0; x < out_width; ++x) {
            for (int c = 0; c < channels; ++c) {
                const float top = tx.w_lo[x] * at(ty.lo[y], tx.lo[x], c) + tx.w_hi[x] * at(ty.lo[y], tx.hi[x], c);
                const float bottom = tx.w_lo[x] * at(ty.hi[y], tx.lo[x], c) + tx.w_hi[x] * at(ty.hi[y], tx.hi[x], c);
                out[(static_cast<size_t>(y) * out_width + x) * channels + c] = ty.w_lo[y] * top + ty.w_hi[y] * bottom;
            }
        }
    }
    return out;
}

InputTensor preprocess(const Image& image, const InputSpec& spec) {
    const auto [out_h, out_w] = input_hw(image.height, image.width, spec);
    const std::vector<float> pixels = resize_bilinear(std::vector<float>(image.rgb.begin(), image.rgb.end()),
                                                      image.height, image.width, 3, out_h, out_w);
    if (spec.normalised_in_graph) {
        // np.clip(np.rint(x), 0, 255): nearbyint rounds halves to even in the default rounding mode, like
        // rint (std::round would not). Without a resize the pixels are whole and come through unchanged.
        std::vector<uint8_t> rounded(pixels.size());
        for (size_t i = 0; i < pixels.size(); ++i)
            rounded[i] = static_cast<uint8_t>(std::clamp(std::nearbyint(pixels[i]), 0.0f, 255.0f));
        return {{1, out_h, out_w, 3}, std::move(rounded)};
    }
    std::vector<float> normalised(static_cast<size_t>(3) * out_h * out_w);
    const size_t plane = static_cast<size_t>(out_h) * out_w;
    for (size_t i = 0; i < plane; ++i)
        for (int c = 0; c < 3; ++c)
            normalised[c * plane + i] = (pixels[i * 3 + c] / spec.pixel_scale - spec.mean[c]) / spec.std[c];
    return {{1, 3, out_h, out_w}, std::move(normalised)};
}

}  // namespace vitdeploy_demo
