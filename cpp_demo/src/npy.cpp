#include "npy.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "error.hpp"

namespace vitdeploy_demo {
namespace {

const char kMagic[] = "\x93NUMPY";

// The value text after `'key':` in a header dict, up to the next top-level comma or brace.
std::string header_value(const std::string& header, const std::string& key, const std::string& path) {
    const size_t at = header.find("'" + key + "':");
    if (at == std::string::npos) throw Error(path + ": .npy header has no '" + key + "'");
    size_t begin = header.find_first_not_of(' ', at + key.size() + 3);
    size_t end = begin;
    int depth = 0;
    while (end < header.size() && (depth > 0 || (header[end] != ',' && header[end] != '}'))) {
        depth += header[end] == '(' ? 1 : header[end] == ')' ? -1 : 0;
        ++end;
    }
    return header.substr(begin, end - begin);
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& path) {
    if (text.size() < 2 || text.front() != '(' || text.back() != ')') throw Error(path + ": bad .npy shape " + text);
    std::vector<int64_t> shape;
    std::stringstream items(text.substr(1, text.size() - 2));
    for (std::string item; std::getline(items, item, ',');) {
        if (item.find_first_not_of(' ') == std::string::npos) continue;
        shape.push_back(std::stoll(item));
    }
    return shape;
}

// `descr` is the numpy dtype string: '<f4' (float32) or '|u1' (uint8, no byte order).
void write_array(const std::string& path, const char* descr, const std::vector<int64_t>& shape, const void* data,
                 size_t byte_size) {
    std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
    for (int64_t dim : shape) header += std::to_string(dim) + ", ";
    if (shape.size() > 1) header.resize(header.size() - 2);  // (1, 2) but (3,)
    else if (shape.size() == 1) header.pop_back();
    header += "), }";
    const size_t unpadded = 6 + 2 + 2 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    std::ofstream file(path, std::ios::binary);
    if (!file) throw Error("cannot write " + path);
    const uint16_t header_len = static_cast<uint16_t>(header.size());
    file.write(kMagic, 6);
    file.put(1).put(0);
    file.put(static_cast<char>(header_len & 0xFF)).put(static_cast<char>(header_len >> 8));
    file << header;
    file.write(static_cast<const char*>(data), static_cast<std::streamsize>(byte_size));
    if (!file) throw Error("cannot write " + path);
}

}  // namespace

void write_npy(const std::string& path, const Tensor& tensor) {
    write_array(path, "<f4", tensor.shape, tensor.data.data(), tensor.data.size() * sizeof(float));
}

void write_npy(const std::string& path, const InputTensor& input) {
    write_array(path, input.is_uint8() ? "|u1" : "<f4", input.shape, input.bytes(), input.byte_size());
}

Tensor read_npy(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path + ": expected a .npy file");
    char magic[6] = {};
    unsigned char version[2] = {};
    file.read(magic, 6).read(reinterpret_cast<char*>(version), 2);
    if (!file || std::memcmp(magic, kMagic, 6) != 0) throw Error(path + " is not a .npy file");
    uint32_t header_len = 0;
    unsigned char len_bytes[4] = {};
    file.read(reinterpret_cast<char*>(len_bytes), version[0] == 1 ? 2 : 4);
    for (int i = version[0] == 1 ? 1 : 3; i >= 0; --i) header_len = header_len << 8 | len_bytes[i];
    std::string header(header_len, '\0');
    file.read(header.data(), header_len);
    if (!file) throw Error(path + ": truncated .npy header");
    if (header_value(header, "descr", path) != "'<f4'" || header_value(header, "fortran_order", path) != "False")
        throw Error(path + " is not a little-endian float32 C-order array: expected dtype float32");
    Tensor tensor;
    tensor.shape = parse_shape(header_value(header, "shape", path), path);
    tensor.data.resize(static_cast<size_t>(element_count(tensor.shape)));
    file.read(reinterpret_cast<char*>(tensor.data.data()),
              static_cast<std::streamsize>(tensor.data.size() * sizeof(float)));
    if (!file) throw Error(path + ": truncated .npy data");
    return tensor;
}

}  // namespace vitdeploy_demo
