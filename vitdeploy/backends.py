"""The one `--backend` vocabulary: each name means the same runtime in every command and in the Python API.

A command takes the subset it can act on: `vitdeploy.load`, serve, serve-bench, extract and bench-sam2 all
of them (vitdeploy.runners.BACKENDS), `vitdeploy build` the builders (vitdeploy.engine.BUILD_CHOICES),
`vitdeploy triton` the runtimes Triton has a backend for (vitdeploy.serve.triton.BACKENDS). Names are
written with underscores, as the engine files and their descriptions name their builder
(`model.tensorrt_rtx.fp32.engine`: `--backend tensorrt_rtx`). Spellings renamed since are still taken, with
a warning (`canonical`; the CLI prints it as one line on stderr).
"""

from __future__ import annotations

import warnings

from vitdeploy.errors import VitdeployError, VitdeployWarning

BACKENDS = {
    "auto": "the best that runs here (runtimes: in vitdeploy.runners' order; build: TensorRT or TensorRT-RTX, "
            "whichever runs on this GPU)",
    "tensorrt": "full TensorRT, its engines (model.tensorrt.<precision>.engine)",
    "tensorrt_rtx": "TensorRT-RTX, its engines (model.tensorrt_rtx.<precision>.engine)",
    "onnxruntime": "ONNX Runtime, on model.onnx or the int8 graph (model.onnxruntime.int8.onnx): with the CUDA "
                   "provider where it runs, else on the CPU",
    "onnxruntime_cuda": "ONNX Runtime with the CUDA provider only",
    "onnxruntime_cpu": "ONNX Runtime on the CPU only",
    "openvino": "OpenVINO on the CPU, its IR engines (model.openvino.<precision>.xml)",
    "aoti": "torch.export + AOTInductor, its packages (model.aoti.<precision>.pt2): for the GPU, else the CPU",
    "aoti_cuda": "AOTInductor packages built for a GPU only",
    "aoti_cpu": "AOTInductor packages built for the CPU only",
}
RENAMED = {"onnxruntime-cuda": "onnxruntime_cuda", "onnxruntime-cpu": "onnxruntime_cpu"}  # old spelling -> name


def canonical(name: str) -> str:
    """`name` in the vocabulary's spelling (a renamed one with a warning); unknown names pass through, for the
    caller's subset to refuse."""
    if name in RENAMED:
        warnings.warn(f"backend {name!r} is deprecated: use {RENAMED[name]!r}", VitdeployWarning, stacklevel=3)
        return RENAMED[name]
    return name


def check_backend(name: str, subset: tuple[str, ...], what: str) -> str:
    """`name` (canonical) if `what` takes it, else a one-line error listing what it takes."""
    name = canonical(name)
    if name not in subset:
        raise VitdeployError(f"unknown {what} backend {name!r}: expected one of {', '.join(subset)}")
    return name
