#include "engine_files.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include <openssl/evp.h>

#include "error.hpp"

namespace vitdeploy_demo {
namespace {

struct DigestFree {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};

}  // namespace

std::string sha256_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path + " to hash it");
    std::unique_ptr<EVP_MD_CTX, DigestFree> context(EVP_MD_CTX_new());
    if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1)
        throw Error("OpenSSL could not start a sha256 digest");
    std::array<char, 1 << 16> chunk;
    while (file.read(chunk.data(), chunk.size()) || file.gcount() > 0)
        if (EVP_DigestUpdate(context.get(), chunk.data(), static_cast<size_t>(file.gcount())) != 1)
            throw Error("OpenSSL sha256 failed on " + path);
    if (file.bad()) throw Error("cannot read " + path + " to hash it");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context.get(), digest, &length) != 1) throw Error("OpenSSL sha256 failed on " + path);
    std::string hex;
    char byte[3];
    for (unsigned int i = 0; i < length; ++i) {
        std::snprintf(byte, sizeof(byte), "%02x", digest[i]);
        hex += byte;
    }
    return hex;
}

void check_engine_files(const EngineSpec& engine, const std::string& directory, const std::string& where) {
    namespace fs = std::filesystem;
    for (const EngineFile& file : engine.files) {
        const fs::path path = fs::path(directory) / file.name;
        std::error_code error;
        // A closed world: the description's plain names (description.cpp) may still be symlinks out.
        if (fs::is_symlink(path, error)) {
            const fs::path target = fs::weakly_canonical(path, error), root = fs::weakly_canonical(directory, error);
            const auto [end, _] = std::mismatch(root.begin(), root.end(), target.begin(), target.end());
            if (error || end != root.end())
                throw Error(path.string() + " is a symbolic link out of " + directory + ": expected the file itself "
                            "beside the engine; copy it in place of the link");
        }
        const auto size = fs::file_size(path, error);
        if (error)
            throw Error(path.string() + " does not exist: " + where + " lists it as part of the engine; copy it "
                        "beside the engine or rebuild with `vitdeploy build`");
        if (static_cast<int64_t>(size) != file.size_bytes)
            throw Error(file.name + " is " + std::to_string(size) + " bytes, " +
                        (static_cast<int64_t>(size) < file.size_bytes ? "truncated" : "longer than built") +
                        ": expected " + std::to_string(file.size_bytes) +
                        " bytes (interrupted copy?); copy it again or rebuild");
    }
    for (const EngineFile& file : engine.files)
        if (sha256_file((fs::path(directory) / file.name).string()) != file.sha256)
            throw Error(file.name + " is corrupt: its sha256 differs from the one recorded at build time (same "
                        "size, changed bytes); copy it again or rebuild");
}

}  // namespace vitdeploy_demo
