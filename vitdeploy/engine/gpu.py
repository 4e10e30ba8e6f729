"""The current CUDA device's compute capability, asked of the CUDA runtime that polygraphy loads.

Engines are checked against it before deserialising: TensorRT's own failure on the wrong GPU is a
log line and a None engine, which says nothing about why.
"""

from __future__ import annotations

import ctypes

_ATTR_MAJOR, _ATTR_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the current CUDA device; None without a usable GPU, driver or CUDA runtime."""
    from polygraphy import cuda
    from polygraphy.exception import PolygraphyException

    try:
        cudart = cuda.wrapper().handle
    except (OSError, PolygraphyException):  # no libcudart on this machine
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
