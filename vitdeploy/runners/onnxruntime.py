"""ONNX Runtime: polygraphy's OnnxrtRunner over a session vitdeploy configures (providers, threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polygraphy.backend.onnxrt import OnnxrtRunner

from vitdeploy.errors import VitdeployError, missing_dependency
from vitdeploy.runners.base import CheckedInputs


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise missing_dependency("onnxruntime", "ort") from None
    return onnxruntime


def available_providers() -> list[str]:
    return _onnxruntime().get_available_providers()


def create_session(path: Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An InferenceSession; `providers` default to CPU, and an unavailable one is a clear error."""
    ort = _onnxruntime()
    providers = providers or ["CPUExecutionProvider"]
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise VitdeployError(f"ONNX Runtime provider {missing[0]} is not available: this onnxruntime offers "
                             f"{', '.join(ort.get_available_providers())} (CUDA needs vitdeploy[ort-gpu] and a GPU)")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise VitdeployError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None


class OnnxRuntimeRunner(CheckedInputs, OnnxrtRunner):
    """Runs an artifact's ONNX file; the session is created on activation."""

    def __init__(self, meta: dict[str, Any], onnx_path: Path, providers: list[str] | None = None,
                 threads: int | None = None, name: str | None = None):
        _onnxruntime()  # fail at construction, not deep inside activate()
        super().__init__(lambda: create_session(onnx_path, providers, threads), name=name)
        self.meta = meta
