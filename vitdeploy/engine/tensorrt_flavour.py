"""Choosing TensorRT or TensorRT-RTX, and pointing polygraphy at it inside a running process.

Polygraphy reads POLYGRAPHY_USE_TENSORRT_RTX once, when `polygraphy.config` is first imported, into
`polygraphy.config.USE_TENSORRT_RTX`. Every polygraphy module that touches TensorRT then binds its
module-global `trt = lazy_import_trt()` at its own import, fixing the module name ("tensorrt" or
"tensorrt_rtx") for good, and `polygraphy.backend.trt.util` caches one `trt.ILogger` subclass. Setting
the environment variable after polygraphy was imported therefore does nothing; `use_backend` instead
sets the config flag, rebinds those `trt` globals, and drops a logger of the other flavour.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import polygraphy.backend.trt.util as trt_util
from polygraphy import config
from polygraphy.mod.trt_importer import lazy_import_trt

from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require

FLAVOURS = ("tensorrt", "tensorrt_rtx")  # module names, which are also the engine `backend` names
LABELS = {"tensorrt": "TensorRT", "tensorrt_rtx": "TensorRT-RTX"}
_BOUND: dict[str, bool] = {}  # "rtx": the flavour polygraphy's `trt` globals were last rebound to


def use_backend(backend: str) -> ModuleType:
    """Import `backend` (tensorrt or tensorrt_rtx) and make polygraphy use it from now on; returns the module."""
    if backend not in FLAVOURS:
        raise VitdeployError(f"unknown TensorRT flavour {backend!r}: expected one of {', '.join(FLAVOURS)}")
    trt = require(backend)
    rtx = backend == "tensorrt_rtx"
    if config.USE_TENSORRT_RTX != rtx or _BOUND.get("rtx") != rtx:
        config.USE_TENSORRT_RTX = rtx
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if rtx else "0"  # for child processes
        for name, module in list(sys.modules.items()):
            if name.startswith("polygraphy.") and type(getattr(module, "trt", None)).__name__ == "LazyModule":
                setattr(module, "trt", lazy_import_trt())
        _BOUND["rtx"] = rtx
    if trt_util.TRT_LOGGER is not None and not isinstance(trt_util.TRT_LOGGER, trt.ILogger):
        trt_util.TRT_LOGGER = None  # the cached logger subclasses the other flavour's ILogger
    return trt


def active_backend() -> str | None:
    """The backend polygraphy now uses, if `use_backend` chose one in this process."""
    if "rtx" not in _BOUND:
        return None
    return "tensorrt_rtx" if _BOUND["rtx"] else "tensorrt"
