"""Facts about this machine's GPU: CUDA compute capability, name, and datasheet peak throughput.

The compute capability is asked of torch where it sees the GPU, else of the CUDA runtime that
polygraphy loads, so it is known without torch's CUDA build too; engines are checked against it before
deserialising, because TensorRT's own failure on the wrong GPU is a log line and a None engine.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from polygraphy import cuda
from polygraphy.exception import PolygraphyException

_ATTR_MAJOR, _ATTR_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets. fp32: CUDA cores; the rest: tensor cores.
# Matched as a substring of the CUDA device name, first match wins (so "H100 PCIe" before "H100").
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "GH200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "H100": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},  # SXM ("H100 80GB HBM3")
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2},
    "T4": {"fp32": 8.1, "fp16": 65.0},
}
PEAK_SOURCE = "NVIDIA datasheet, dense"


def _cudart() -> Any | None:
    """The CUDA runtime library polygraphy loads, or None where it finds none."""
    try:
        return cuda.wrapper().handle
    except (OSError, PolygraphyException):  # no libcudart on this machine
        return None


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the current CUDA device; None without a usable GPU, driver or CUDA runtime.
    torch answers where it sees the GPU; the CUDA runtime (cudart) otherwise, e.g. for a CPU-only torch."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_capability()
    cudart = _cudart()
    if cudart is None:
        return None
    count, device = ctypes.c_int(0), ctypes.c_int(0)
    if cudart.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None  # e.g. error 35 (no driver) or 100 (no device)
    if cudart.cudaGetDevice(ctypes.byref(device)) != 0:
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cudart.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_MAJOR, device)
    cudart.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_MINOR, device)
    return major.value, minor.value


def format_capability(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def gpu_present() -> bool:
    """Whether a CUDA GPU is usable, asked of torch and of the CUDA runtime polygraphy finds."""
    return torch.cuda.is_available() or compute_capability() is not None


def gpu_name() -> str:
    """The CUDA device's name as torch reports it, or a generic one where torch has no CUDA build."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "the CUDA GPU"


def gpu_peak(device_name: str) -> dict[str, Any] | None:
    """The peak table entry for a CUDA device name, or None for a GPU not in the table."""
    for entry, tflops in GPU_PEAKS.items():
        if entry in device_name:
            return {"gpu": device_name, "entry": entry, "source": PEAK_SOURCE, "tflops": tflops}
    return None
