#include "image.hpp"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "error.hpp"

namespace vitdeploy_demo {
namespace {

// libpng and libjpeg report errors by longjmp; the message is kept here for the one-line error.
struct DecoderError {
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX + 200] = "";
};

struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_file(const std::string& path, const char* mode) {
    File file(std::fopen(path.c_str(), mode));
    if (!file) throw Error("cannot open " + path + " (" + std::strerror(errno) + ")");
    return file;
}

void png_error_handler(png_structp png, png_const_charp message) {
    auto* error = static_cast<DecoderError*>(png_get_error_ptr(png));
    std::snprintf(error->message, sizeof(error->message), "%s", message);
    std::longjmp(error->jump, 1);
}

void png_warning_ignored(png_structp, png_const_charp) {}

// Heap-held so its contents stay valid across the longjmp.
struct PngRead {
    png_structp png = nullptr;
    png_infop info = nullptr;
    Image image;
    std::vector<png_bytep> rows;
    ~PngRead() { png_destroy_read_struct(&png, &info, nullptr); }
};

Image read_png(std::FILE* file, const std::string& path) {
    DecoderError error;
    auto state = std::make_unique<PngRead>();
    state->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_error_handler, png_warning_ignored);
    if (!state->png || !(state->info = png_create_info_struct(state->png))) throw Error("libpng: out of memory");
    if (setjmp(error.jump)) throw Error(path + " is not a readable PNG (" + error.message + ")");
    png_structp png = state->png;
    png_infop info = state->info;
    png_init_io(png, file);
    png_read_info(png, info);
    const int color_type = png_get_color_type(png, info);
    if (png_get_bit_depth(png, info) == 16 && color_type == PNG_COLOR_TYPE_GRAY)
        throw Error(path + " is a 16-bit grey PNG: expected 8-bit grey, palette, RGB or RGBA");
    png_set_palette_to_rgb(png);
    png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    Image& image = state->image;
    image.height = static_cast<int>(png_get_image_height(png, info));
    image.width = static_cast<int>(png_get_image_width(png, info));
    if (png_get_rowbytes(png, info) != static_cast<size_t>(image.width) * 3)
        throw Error(path + ": unexpected PNG pixel layout after expanding to RGB");
    image.rgb.resize(static_cast<size_t>(image.height) * image.width * 3);
    state->rows.resize(image.height);
    for (int y = 0; y < image.height; ++y) state->rows[y] = &image.rgb[static_cast<size_t>(y) * image.width * 3];
    png_read_image(png, state->rows.data());
    png_read_end(png, nullptr);
    return std::move(state->image);
}

void jpeg_error_handler(j_common_ptr cinfo) {
    auto* error = static_cast<DecoderError*>(cinfo->client_data);
    (*cinfo->err->format_message)(cinfo, error->message);
    std::longjmp(error->jump, 1);
}

void jpeg_message_ignored(j_common_ptr) {}

struct JpegRead {
    jpeg_decompress_struct cinfo{};
    jpeg_error_mgr err{};
    Image image;
    bool created = false;
    ~JpegRead() {
        if (created) jpeg_destroy_decompress(&cinfo);
    }
};

Image read_jpeg(std::FILE* file, const std::string& path) {
    DecoderError error;
    auto state = std::make_unique<JpegRead>();
    jpeg_decompress_struct& cinfo = state->cinfo;
    cinfo.err = jpeg_std_error(&state->err);
    state->err.error_exit = jpeg_error_handler;
    state->err.output_message = jpeg_message_ignored;
    cinfo.client_data = &error;
    if (setjmp(error.jump)) throw Error(path + " is not a readable JPEG (" + error.message + ")");
    jpeg_create_decompress(&cinfo);
    state->created = true;
    jpeg_stdio_src(&cinfo, file);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)
        throw Error(path + " is a CMYK JPEG: expected a greyscale or colour (YCbCr) JPEG");
    cinfo.out_color_space = JCS_RGB;  // libjpeg's defaults (islow DCT, fancy upsampling) are Pillow's too
    jpeg_start_decompress(&cinfo);
    Image& image = state->image;
    image.height = static_cast<int>(cinfo.output_height);
    image.width = static_cast<int>(cinfo.output_width);
    image.rgb.resize(static_cast<size_t>(image.height) * image.width * 3);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = &image.rgb[static_cast<size_t>(cinfo.output_scanline) * image.width * 3];
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    return std::move(state->image);
}

struct PngWrite {
    png_structp png = nullptr;
    png_infop info = nullptr;
    std::vector<png_bytep> rows;
    ~PngWrite() { png_destroy_write_struct(&png, &info); }
};

}  // namespace

Image load_image(const std::string& path) {
    File file(std::fopen(path.c_str(), "rb"));
    if (!file) {
        if (errno == ENOENT) throw Error("image " + path + " does not exist: expected a PNG or JPEG file");
        throw Error("cannot open image " + path + " (" + std::strerror(errno) + ")");
    }
    unsigned char magic[8] = {};
    const size_t got = std::fread(magic, 1, sizeof(magic), file.get());
    std::rewind(file.get());
    if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(file.get(), path);
    if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg(file.get(), path);
    throw Error(path + " is neither PNG nor JPEG: expected a PNG or JPEG file");
}

void write_png(const std::string& path, const Image& image) {
    File file = open_file(path, "wb");
    DecoderError error;
    auto state = std::make_unique<PngWrite>();
    state->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, png_error_handler, png_warning_ignored);
    if (!state->png || !(state->info = png_create_info_struct(state->png))) throw Error("libpng: out of memory");
    if (setjmp(error.jump)) throw Error("cannot write " + path + " (" + error.message + ")");
    png_init_io(state->png, file.get());
    png_set_IHDR(state->png, state->info, image.width, image.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(state->png, state->info);
    state->rows.resize(image.height);
    for (int y = 0; y < image.height; ++y)
        state->rows[y] = const_cast<png_bytep>(&image.rgb[static_cast<size_t>(y) * image.width * 3]);
    png_write_image(state->png, state->rows.data());
    png_write_end(state->png, nullptr);
}

}  // namespace vitdeploy_demo
