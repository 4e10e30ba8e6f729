// The files an engine consists of, checked against its description before any runtime opens them.
#pragma once

#include <string>

#include "description.hpp"

namespace vitdeploy_demo {

// Lower-case hex sha256 of a file's bytes (OpenSSL's EVP digest).
std::string sha256_file(const std::string& path);

// Every file the description lists is in `directory` with the recorded size and sha256. Sizes are checked
// for all files before any is hashed, so a truncated copy is named as such. `where` names the description.
void check_engine_files(const EngineSpec& engine, const std::string& directory, const std::string& where);

}  // namespace vitdeploy_demo
