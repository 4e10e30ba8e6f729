"""Engine sidecars (`model.<backend>.<precision>.engine.json`): write, read, and check before loading.

A serialized engine only loads on the exact TensorRT version and GPU family it was built for, and
TensorRT's own failure is a log line plus a None engine. The sidecar records what the engine needs, so
`check_engine` can say precisely why an engine cannot load before anything is deserialised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitdeploy.artifact import FORMAT, FORMAT_VERSION
from vitdeploy.engine.backend import EXTRAS, LABELS, is_installed, use_backend
from vitdeploy.engine.gpu import compute_capability, format_capability
from vitdeploy.errors import VitdeployError, missing_dependency
from vitdeploy.integrity import check_files

# A TensorRT-RTX engine built without a target GPU runs on these and later (Turing needs a targeted build).
RTX_PORTABLE_MIN_CAPABILITY = (8, 0)


def engine_file_name(backend: str, precision: str) -> str:
    return f"model.{backend}.{precision}.engine"


def sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The sidecar of `engine_path`, checked for format; raises VitdeployError if missing or unreadable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise VitdeployError(f"{engine_path.name} has no sidecar {path.name} beside it: rebuild it with "
                             "`vitdeploy build` (an engine is only loaded together with its description)")
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VitdeployError(f"{path} is not valid JSON ({exc}): rebuild the engine") from None
    if sidecar.get("format") != FORMAT or sidecar.get("format_version") != FORMAT_VERSION or "engine" not in sidecar:
        raise VitdeployError(f"{path} is not a vitdeploy engine sidecar: expected format {FORMAT!r} version "
                             f"{FORMAT_VERSION} with an 'engine' section")
    return sidecar


def check_runtime(engine: dict[str, Any]) -> None:
    """The installed backend is the family and exact version that built the engine."""
    backend = engine["backend"]
    if backend not in EXTRAS:
        raise VitdeployError(f"engine backend {backend!r} is unknown: expected one of {', '.join(EXTRAS)}")
    if not is_installed(backend):
        raise missing_dependency(backend, EXTRAS[backend])
    installed = use_backend(backend).__version__
    if installed != engine["backend_version"]:
        raise VitdeployError(f"engine was built with {LABELS[backend]} {engine['backend_version']} but "
                             f"{installed} is installed: engines only load on the version that built them; "
                             "rebuild it with `vitdeploy build`")


def check_gpu(engine: dict[str, Any], capability: tuple[int, int] | None) -> None:
    """The GPU at hand (its compute capability, None for no GPU) can run the engine."""
    label = LABELS[engine["backend"]]
    if capability is None:
        raise VitdeployError(f"no CUDA GPU found (no device or no NVIDIA driver): {label} engines need an "
                             "NVIDIA GPU to run; use the ONNX model with ONNX Runtime on a CPU")
    required, actual = engine["compute_capability"], format_capability(capability)
    if required is not None and required != actual:
        raise VitdeployError(f"engine was built for GPUs of compute capability {required}, this GPU is {actual}: "
                             "rebuild it on this machine with `vitdeploy build`")
    if required is None and capability < RTX_PORTABLE_MIN_CAPABILITY:
        low = format_capability(RTX_PORTABLE_MIN_CAPABILITY)
        raise VitdeployError(f"this GPU has compute capability {actual}; a portable {label} engine needs {low} "
                             "or newer: rebuild it for this GPU with `vitdeploy build --target-gpu`")


def check_engine(engine_path: Path) -> dict[str, Any]:
    """Everything that decides whether `engine_path` can load here; returns its sidecar."""
    sidecar = read_sidecar(engine_path)
    engine = sidecar["engine"]
    if not engine_path.is_file():
        raise VitdeployError(f"engine file {engine_path} does not exist: build it with `vitdeploy build`")
    check_files(engine_path.parent, engine["files"], "copy it again or rebuild it with `vitdeploy build`")
    check_runtime(engine)
    check_gpu(engine, compute_capability())
    return sidecar


def profile_table(profile: dict[str, dict[str, list[int]]]) -> str:
    """The optimisation profile as aligned rows: name, min, opt, max."""
    rows = [("", "min", "opt", "max")] + [(name, *(str(list(p[k])) for k in ("min", "opt", "max")))
                                          for name, p in profile.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def describe_engine(sidecar: dict[str, Any]) -> str:
    """A short human-readable summary of an engine sidecar."""
    engine = sidecar["engine"]
    target = engine["compute_capability"] or "portable (no GPU-specific target)"
    lines = [
        f"{engine['file']}: {LABELS.get(engine['backend'], engine['backend'])} {engine['backend_version']}, "
        f"{engine['precision']}, {sum(f['size_bytes'] for f in engine['files'].values()) / 2**20:.1f} MiB, "
        f"built in {engine['build_seconds']:.1f}s",
        f"model: {sidecar['timm_name']} (recipe {sidecar['recipe']}), compute capability: {target}",
        profile_table(engine["profile"]),
        "outputs: " + ", ".join(f"{o['name']} ({o['kind']}, {o['channels']} ch"
                                + (f", stride {o['stride']})" if o["stride"] else ")") for o in sidecar["outputs"]),
    ]
    return "\n".join(lines)
