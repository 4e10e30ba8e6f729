// A user-facing failure: the programs print what() as one line and exit non-zero.
#pragma once

#include <stdexcept>

namespace vitdeploy_demo {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace vitdeploy_demo
