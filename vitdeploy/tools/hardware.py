"""Facts about this machine's GPU: CUDA compute capability, name, and datasheet peak throughput.

The compute capability is asked of the CUDA runtime that polygraphy loads, else (no libcudart on the
library path) of torch's CUDA build where torch is installed, so a runtime install without torch knows it
too and a machine without a GPU never imports torch to learn so; engines are checked against it before
deserialising, because TensorRT's own failure on the wrong GPU is a log line and a None engine.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from typing import Any

from polygraphy import cuda
from polygraphy.exception import PolygraphyException

from vitdeploy.optional import is_installed

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


def _cuda_error(cudart: Any, status: int) -> str:
    cudart.cudaGetErrorName.restype = cudart.cudaGetErrorString.restype = ctypes.c_char_p
    return f"{cudart.cudaGetErrorName(status).decode()}: {cudart.cudaGetErrorString(status).decode()}"


def torch_cuda() -> Any | None:
    """torch.cuda where torch is installed and sees a GPU (imported here, not at vitdeploy's import), else None."""
    if not is_installed("torch"):
        return None
    import torch
    return torch.cuda if torch.cuda.is_available() else None


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the current CUDA device; None without a usable GPU, driver or CUDA runtime.
    The CUDA runtime (cudart) answers where polygraphy finds one; torch's CUDA build otherwise."""
    cudart = _cudart()
    if cudart is None:
        torch_gpu = torch_cuda()
        return None if torch_gpu is None else tuple(torch_gpu.get_device_capability())
    count, device = ctypes.c_int(0), ctypes.c_int(0)
    if cudart.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None  # e.g. error 35 (no driver) or 100 (no device)
    if cudart.cudaGetDevice(ctypes.byref(device)) != 0:
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cudart.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_MAJOR, device)
    cudart.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_MINOR, device)
    return major.value, minor.value


def no_gpu_reason() -> str:
    """Why no CUDA GPU is usable here, as the CUDA runtime reports it (for `vitdeploy doctor` and refusals)."""
    cudart = _cudart()
    if cudart is None:
        return "no CUDA runtime library (libcudart) found"
    count = ctypes.c_int(0)
    status = cudart.cudaGetDeviceCount(ctypes.byref(count))
    if status != 0:
        return f"the CUDA runtime reports {_cuda_error(cudart, status)}"
    return "the CUDA runtime sees no device" if count.value == 0 else "torch cannot use the GPU the CUDA runtime sees"


def cuda_driver_version() -> str | None:
    """The CUDA version the NVIDIA driver supports (e.g. 12.8), None without a driver."""
    cudart, version = _cudart(), ctypes.c_int(0)
    if cudart is None or cudart.cudaDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def driver_release() -> str | None:
    """The NVIDIA driver's release (e.g. 570.86.15) from nvidia-smi, None where it is not on PATH."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
    lines = query.stdout.split()
    return lines[0] if query.returncode == 0 and lines else None


def format_capability(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def gpu_present() -> bool:
    """Whether a CUDA GPU is usable, asked of the CUDA runtime polygraphy finds, else of torch."""
    return compute_capability() is not None


def gpu_name() -> str:
    """The CUDA device's name as torch reports it, or a generic one without torch's CUDA build."""
    torch_gpu = torch_cuda() if compute_capability() is not None else None
    return torch_gpu.get_device_name() if torch_gpu is not None else "the CUDA GPU"


def gpu_peak(device_name: str) -> dict[str, Any] | None:
    """The peak table entry for a CUDA device name, or None for a GPU not in the table."""
    for entry, tflops in GPU_PEAKS.items():
        if entry in device_name:
            return {"gpu": device_name, "entry": entry, "source": PEAK_SOURCE, "tflops": tflops}
    return None
