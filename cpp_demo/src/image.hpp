// 8-bit RGB images: PNG/JPEG decoding the way Pillow's convert("RGB") does it, and PNG writing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vitdeploy_demo {

struct Image {
    int height = 0;
    int width = 0;
    std::vector<uint8_t> rgb;  // height * width * 3, row-major
};

// Grey is replicated, palettes expanded, alpha dropped without compositing, 16-bit colour keeps its
// high byte (as Pillow does); 16-bit grey and CMYK JPEGs are refused (Pillow does not make them RGB
// the same way). EXIF orientation is not applied.
Image load_image(const std::string& path);

void write_png(const std::string& path, const Image& image);

}  // namespace vitdeploy_demo
