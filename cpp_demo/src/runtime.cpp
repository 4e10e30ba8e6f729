#include "runtime.hpp"

#include "error.hpp"

namespace vitdeploy_demo {

const std::vector<Backend>& compiled_backends() {
    static const std::vector<Backend> backends = [] {
        std::vector<Backend> all;
#ifdef VITDEPLOY_WITH_OPENVINO
        all.push_back(openvino_backend());
#endif
#ifdef VITDEPLOY_WITH_TENSORRT
        all.push_back(tensorrt_backend());
#endif
#ifdef VITDEPLOY_WITH_AOTI
        all.push_back(aoti_backend());
#endif
        return all;
    }();
    return backends;
}

const Backend& backend_for(const EngineSpec& engine) {
    std::string names;
    for (const Backend& backend : compiled_backends()) {
        if (backend.name == engine.backend) {
            backend.check(engine);
            return backend;
        }
        names += (names.empty() ? "" : ", ") + backend.name;
    }
    throw Error("the engine is a " + engine.backend + " engine but this vitdeploy_demo was built with " +
                (names.empty() ? "no runtime" : names + " only") + ": rebuild the demo with " + engine.backend +
                (engine.backend == "openvino" ? " (-DOpenVINO_DIR=<openvino>/cmake)"
                 : engine.backend == "aoti" ? " (a python3 with torch on PATH, or -DTORCH_PYTHON=<python>)"
                                            : " (-DTENSORRT_ROOT=...)"));
}

#ifndef VITDEPLOY_WITH_OPENVINO
std::vector<Tensor> run_openvino_graph(const std::string& path, const std::string&, const std::vector<GraphInput>&,
                                       const std::vector<std::string>&) {
    throw Error(path + " runs on OpenVINO, but this vitdeploy_demo was built without it: rebuild the demo with "
                "-DOpenVINO_DIR=<openvino>/cmake");
}
#endif

}  // namespace vitdeploy_demo
