"""Optional dependencies, imported in one place: a missing one is a one-line error naming its extra.

The export side (torch, timm, onnxscript, onnx-ir, safetensors: `export`, `verify`, `bench`, `quantize`),
TensorRT, TensorRT-RTX, OpenVINO, ONNX Runtime, matplotlib, Ray (with the starlette and tqdm it brings),
tritonclient, Meta's sam2 (the SAM2 parity reference) and torchao (bench's int8 torch peer) are extras. The
runtime's own dependencies (numpy, Pillow, click, polygraphy) are imported at module top, onnx where a graph is
read or converted; the export side's modules import torch and timm at their top too, and the runtime side never
imports them (tests/test_layering.py): a command imports an export module only inside itself, after `ensure_export`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from vitdeploy.errors import VitdeployError

EXPORT = ("torch", "timm", "onnxscript", "onnx_ir", "safetensors")  # the export extra's modules
EXTRAS = {**{module: "export" for module in EXPORT}, "tensorrt": "trt", "tensorrt_rtx": "trt-rtx", "openvino": "openvino",
          "onnxruntime": "ort", "matplotlib": "plot", "ray": "serve", "starlette": "serve", "tqdm": "serve", "tritonclient": "triton",
          "sam2": "sam2", "torchao": "torchao"}


def is_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def install_hint(module: str) -> str:
    """`pip install 'vitdeploy[extra]'` for an optional dependency (or one of its submodules)."""
    return f"pip install 'vitdeploy[{EXTRAS[module.split('.')[0]]}]'"


def missing(module: str) -> VitdeployError:
    """The error for an optional dependency that is not installed, naming the extra to install."""
    return VitdeployError(f"{module} is not installed: {install_hint(module)}")


def ensure_installed(module: str) -> None:
    """Raise `missing(module)` unless it is installed, without importing it (Ray reads its environment at import)."""
    if not is_installed(module.split(".")[0]):
        raise missing(module.split(".")[0])


def ensure_export() -> None:
    """Raise `missing` for the first module of the export extra that is not installed (export, verify, bench,
    quantize, matrix, gpu-proof, list --pyramids), before the export side's modules are imported."""
    for module in EXPORT:
        ensure_installed(module)


def require(module: str) -> ModuleType:
    """Import an optional dependency (or one of its submodules), or raise `missing(module)`."""
    ensure_installed(module)
    return importlib.import_module(module)
