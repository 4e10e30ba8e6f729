// The tiny check harness the C++ tests share: failures are counted and printed with their line.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "error.hpp"

namespace vitdeploy_demo_tests {

inline int failures = 0;

inline void check(bool ok, const std::string& what, int line) {
    if (!ok) {
        std::fprintf(stderr, "FAIL line %d: %s\n", line, what.c_str());
        ++failures;
    }
}

// Runs `body`, expecting a one-line vitdeploy_demo::Error whose message contains `needle`.
inline void check_throws(const std::function<void()>& body, const std::string& needle, int line) {
    try {
        body();
    } catch (const vitdeploy_demo::Error& exc) {
        const std::string message = exc.what();
        check(message.find(needle) != std::string::npos && message.find('\n') == std::string::npos,
              "one-line message '" + message + "' mentions '" + needle + "'", line);
        return;
    }
    check(false, "expected an error mentioning '" + needle + "'", line);
}

}  // namespace vitdeploy_demo_tests

#define CHECK(cond) vitdeploy_demo_tests::check((cond), #cond, __LINE__)
#define CHECK_NEAR(a, b, tol) vitdeploy_demo_tests::check(std::fabs((a) - (b)) <= (tol), #a " ~= " #b, __LINE__)
#define CHECK_THROWS(body, needle) vitdeploy_demo_tests::check_throws([&] { body; }, needle, __LINE__)
