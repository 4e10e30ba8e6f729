#include "sam2.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "preprocess.hpp"

namespace vitdeploy_demo {

Sam2Decoder load_sam2_decoder(const std::string& path) {
    std::ifstream file(path);
    if (!file) throw Error("SAM2 decoder description " + path + " does not exist: export the artifact with --decoder");
    try {
        const nlohmann::json data = nlohmann::json::parse(file);
        if (data.at("format") != "vitdeploy.sam2_decoder")
            throw Error(path + " is not a SAM2 decoder description: expected format vitdeploy.sam2_decoder");
        Sam2Decoder decoder;
        decoder.image_size = data.at("image_size").get<int>();
        decoder.mask_size = data.at("mask_hw").at(0).get<int>();
        decoder.max_points = data.at("multimask").at("max_points").get<int>();
        decoder.mask_threshold = data.at("mask_threshold").get<float>();
        decoder.encoder_weights_sha256 = data.at("encoder_weights_sha256").get<std::string>();
        return decoder;
    } catch (const nlohmann::json::exception& exc) {
        throw Error(path + " is not a valid SAM2 decoder description (" + exc.what() + "): re-export the artifact");
    }
}

namespace {

std::vector<float> numbers(const std::string& text, const std::string& what, const std::string& form,
                           size_t lo, size_t hi) {
    std::vector<float> values;
    std::stringstream parts(text);
    for (std::string part; std::getline(parts, part, ',');) {
        size_t used = 0;
        float value = 0;
        try {
            value = std::stof(part, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != part.size() || !std::isfinite(value)) throw Error(what + " '" + text + "': expected " + form);
        values.push_back(value);
    }
    if (values.size() < lo || values.size() > hi) throw Error(what + " '" + text + "': expected " + form);
    return values;
}

std::string number(float value) {
    std::ostringstream out;
    out << value;
    return out.str();
}

}  // namespace

Sam2Point parse_point(const std::string& text) {
    const std::vector<float> v = numbers(text, "--point", "X,Y or X,Y,LABEL (LABEL 1 foreground, 0 background)", 2, 3);
    const float label = v.size() == 3 ? v[2] : 1.0f;
    if (label != 0.0f && label != 1.0f)
        throw Error("--point '" + text + "': label " + number(label) + ", expected 1 (foreground) or 0 (background)");
    return {v[0], v[1], static_cast<int>(label)};
}

std::array<float, 4> parse_box(const std::string& text) {
    const std::vector<float> v = numbers(text, "--box", "X0,Y0,X1,Y1", 4, 4);
    if (v[0] > v[2] || v[1] > v[3]) throw Error("--box '" + text + "': expected X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1");
    return {v[0], v[1], v[2], v[3]};
}

Sam2Prompt sam2_prompt(const std::vector<Sam2Point>& points, const std::optional<std::array<float, 4>>& box,
                       int height, int width, const Sam2Decoder& decoder) {
    std::vector<Sam2Point> all;
    if (box) all = {{(*box)[0], (*box)[1], 2}, {(*box)[2], (*box)[3], 3}};
    all.insert(all.end(), points.begin(), points.end());
    if (all.empty()) throw Error("no prompt: expected --point X,Y[,LABEL] (repeatable) and/or --box X0,Y0,X1,Y1");
    if (static_cast<int>(all.size()) > decoder.max_points)
        throw Error(std::to_string(all.size()) + " prompt points: expected at most " +
                    std::to_string(decoder.max_points) + " (box corners count as two)");
    Sam2Prompt prompt;
    for (const Sam2Point& p : all) {
        if (!(p.x >= 0 && p.x <= width && p.y >= 0 && p.y <= height))
            throw Error("prompt point (" + number(p.x) + ", " + number(p.y) + ") is outside the image (" +
                        std::to_string(width) + "x" + std::to_string(height) + "): expected 0 <= x <= " +
                        std::to_string(width) + " and 0 <= y <= " + std::to_string(height));
        // SAM2's transform_coords, in the float64 numpy computes it in, then float32
        prompt.coords.push_back(static_cast<float>(static_cast<double>(p.x) / width * decoder.image_size));
        prompt.coords.push_back(static_cast<float>(static_cast<double>(p.y) / height * decoder.image_size));
        prompt.labels.push_back(p.label);
    }
    return prompt;
}

namespace {

struct Coefficients {
    int size = 0;                  // taps per output (ksize)
    std::vector<int> first, count; // per output: first input index, number of taps
    std::vector<double> weights;   // per output: `size` weights
};

// Pillow's precompute_coeffs with its bilinear filter (support 1), over the whole input.
Coefficients coefficients(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = std::max(scale, 1.0);
    const double support = 1.0 * filterscale;
    Coefficients c;
    c.size = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.weights.assign(static_cast<size_t>(out_size) * c.size, 0.0);
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double* k = &c.weights[static_cast<size_t>(xx) * c.size];
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            double t = (x + xmin - center + 0.5) * ss;
            if (t < 0.0) t = -t;
            const double w = t < 1.0 ? 1.0 - t : 0.0;
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x)
            if (ww != 0.0) k[x] /= ww;
        c.first.push_back(xmin);
        c.count.push_back(xmax);
    }
    return c;
}

}  // namespace

std::vector<float> resize_antialiased(const std::vector<float>& plane, int height, int width, int out_height,
                                      int out_width) {
    std::vector<float> current = plane;
    int w = width;
    if (out_width != width) {
        const Coefficients c = coefficients(width, out_width);
        std::vector<float> out(static_cast<size_t>(height) * out_width);
        for (int y = 0; y < height; ++y)
            for (int xx = 0; xx < out_width; ++xx) {
                double ss = 0.0;
                const double* k = &c.weights[static_cast<size_t>(xx) * c.size];
                for (int x = 0; x < c.count[xx]; ++x) ss += current[static_cast<size_t>(y) * w + c.first[xx] + x] * k[x];
                out[static_cast<size_t>(y) * out_width + xx] = static_cast<float>(ss);
            }
        current.swap(out);
        w = out_width;
    }
    if (out_height != height) {
        const Coefficients c = coefficients(height, out_height);
        std::vector<float> out(static_cast<size_t>(out_height) * w);
        for (int yy = 0; yy < out_height; ++yy)
            for (int x = 0; x < w; ++x) {
                double ss = 0.0;
                const double* k = &c.weights[static_cast<size_t>(yy) * c.size];
                for (int y = 0; y < c.count[yy]; ++y) ss += current[static_cast<size_t>(c.first[yy] + y) * w + x] * k[y];
                out[static_cast<size_t>(yy) * w + x] = static_cast<float>(ss);
            }
        current.swap(out);
    }
    return current;
}

InputTensor sam2_input(const Image& image, int size, const InputSpec& spec) {
    const size_t pixels = static_cast<size_t>(image.height) * image.width;
    const size_t plane = static_cast<size_t>(size) * size;
    std::vector<float> out(3 * plane);
    for (int c = 0; c < 3; ++c) {
        std::vector<float> channel(pixels);
        for (size_t i = 0; i < pixels; ++i) channel[i] = static_cast<float>(image.rgb[i * 3 + c]) / 255.0f;
        const std::vector<float> resized = resize_antialiased(channel, image.height, image.width, size, size);
        for (size_t i = 0; i < plane; ++i) out[c * plane + i] = (resized[i] - spec.mean[c]) / spec.std[c];
    }
    return {{1, 3, size, size}, std::move(out)};
}

Tensor upsample_masks(const Tensor& low_res, int height, int width) {
    const int masks = static_cast<int>(low_res.shape.at(0)), h = static_cast<int>(low_res.shape.at(1)),
              w = static_cast<int>(low_res.shape.at(2));
    std::vector<float> hwc(low_res.data.size());
    for (int m = 0; m < masks; ++m)
        for (int i = 0; i < h * w; ++i) hwc[static_cast<size_t>(i) * masks + m] = low_res.data[static_cast<size_t>(m) * h * w + i];
    const std::vector<float> up = resize_bilinear(hwc, h, w, masks, height, width);
    Tensor out{{masks, height, width}, std::vector<float>(up.size())};
    const size_t plane = static_cast<size_t>(height) * width;
    for (int m = 0; m < masks; ++m)
        for (size_t i = 0; i < plane; ++i) out.data[m * plane + i] = up[i * masks + m];
    return out;
}

Image mask_overlay(const Image& image, const float* logits, float threshold) {
    constexpr float kBlend = 0.5f;
    constexpr float kColor[3] = {30.0f, 144.0f, 255.0f};  // SAM2's notebooks' blue
    Image out = image;
    const size_t pixels = static_cast<size_t>(image.height) * image.width;
    for (size_t i = 0; i < pixels; ++i) {
        if (!(logits[i] > threshold)) continue;
        for (int c = 0; c < 3; ++c) {
            const float blended = (1.0f - kBlend) * static_cast<float>(image.rgb[i * 3 + c]) + kBlend * kColor[c];
            out.rgb[i * 3 + c] = static_cast<uint8_t>(std::clamp(std::lround(blended), 0L, 255L));
        }
    }
    return out;
}

}  // namespace vitdeploy_demo
