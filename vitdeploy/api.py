"""The Python runtime: `vitdeploy.load(artifact).infer(images)` -> the named pyramid levels, in order.

A thin layer over the runners (vitdeploy.runners.*), which check every batch against the artifact's
input rules before a runtime sees it, and over vitdeploy.preprocess for images and image files.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import image_hw

# `auto` tries them in this order: GPU runtimes first, then OpenVINO, the faster CPU runtime (README, Benchmark).
BACKENDS = ("tensorrt", "onnxruntime-cuda", "openvino", "onnxruntime-cpu")
ALIASES = {"onnxruntime": ("onnxruntime-cuda", "onnxruntime-cpu"), "auto": BACKENDS}
ENGINE_PRECISIONS = ("fp32", "fp16", "bf16")  # preference when no precision is asked for: exactness first
ENGINE_FAMILIES = {"tensorrt": ("tensorrt", "tensorrt_rtx"), "openvino": ("openvino",)}  # backend -> builders

Images = np.ndarray | str | os.PathLike[str] | Sequence[np.ndarray | str | os.PathLike[str]]


@dataclass(frozen=True)
class Level:
    """One output: a feature map [B, channels, H/stride, W/stride] or the embedding [B, channels]."""

    name: str
    kind: str
    channels: int
    stride: int | None
    index: int | None


class Pyramid(Mapping[str, np.ndarray]):
    """The outputs of one `infer` call: name -> array, iterated in pyramid order (fine to coarse)."""

    def __init__(self, levels: tuple[Level, ...], arrays: Mapping[str, np.ndarray]):
        self.levels = levels
        self._arrays = {level.name: arrays[level.name] for level in levels}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {list(array.shape)}" for name, array in self._arrays.items())
        return f"Pyramid({shapes})"


def gpu_present() -> bool:
    """Whether a CUDA GPU is usable, asked of torch and of the CUDA runtime polygraphy finds."""
    import torch

    if torch.cuda.is_available():
        return True
    from vitdeploy.engine.gpu import compute_capability

    return compute_capability() is not None


def engine_paths(artifact: Artifact, backend: str = "tensorrt", precision: str | None = None) -> list[Path]:
    """The artifact's engines for `backend` (`model.<builder>.<precision>.<ext>` with a `.json` description),
    `precision` only if given, in order of preference."""
    if artifact.directory is None:
        return []
    precisions = (precision,) if precision else ENGINE_PRECISIONS
    rank = {p: i for i, p in enumerate(precisions)}
    engines = []
    for description in artifact.directory.glob("model.*.*.*.json"):
        _, builder, engine_precision, _, _ = description.name.split(".", 4)
        if builder in ENGINE_FAMILIES[backend] and engine_precision in rank and description.with_suffix("").is_file():
            engines.append((rank[engine_precision], description.with_suffix("")))
    return [path for _, path in sorted(engines)]


def engine_problem(artifact: Artifact, path: Path) -> str | None:
    """Why the engine at `path` cannot run the artifact here (description, files, runtime, device); None if it can."""
    from vitdeploy.engine.openvino import BACKEND as OPENVINO, check_openvino_engine
    from vitdeploy.engine.sidecar import check_engine, read_sidecar

    try:
        sidecar = read_sidecar(path)
        if sidecar["engine"]["backend"] == OPENVINO:
            check_openvino_engine(path, sidecar)
        else:
            check_engine(path)
    except VitdeployError as exc:
        return str(exc)
    if sidecar["export"]["files"] != artifact.meta["export"]["files"]:
        return f"{path.name} was built from another model.onnx: rebuild it with `vitdeploy build`"
    return None


def usable_engine(artifact: Artifact, backend: str, precision: str | None = None) -> tuple[Path | None, str]:
    """The first `backend` engine that can load here, or None and why none can."""
    paths = engine_paths(artifact, backend, precision)
    if not paths:
        what = f"no {precision} {backend} engine" if precision else f"no {backend} engine"
        return None, f"{what} in the artifact (build one with `vitdeploy build --backend {backend}`)"
    reasons = []
    for path in paths:
        problem = engine_problem(artifact, path)
        if problem is None:
            return path, ""
        reasons.append(f"{path.name}: {problem}")
    return None, "; ".join(reasons)


def onnxruntime_problem(device: str) -> str | None:
    """Why ONNX Runtime cannot run on `device` (cpu or cuda) here; None if it can."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'vitdeploy[ort]')"
    if device == "cpu":
        return None
    from vitdeploy.runners.onnxruntime import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        return "this onnxruntime has no CUDA provider (pip install 'vitdeploy[ort-gpu]')"
    return None if gpu_present() else "no CUDA GPU found"


def _check_backend(artifact: Artifact, backend: str, precision: str | None) -> tuple[str | None, Path | None]:
    """(why `backend` cannot run `artifact` here or None, the engine it would use)."""
    if backend in ENGINE_FAMILIES:
        engine, problem = usable_engine(artifact, backend, precision)
        return problem or None, engine
    return onnxruntime_problem(backend.removeprefix("onnxruntime-")), None


def backend_status(artifact: Artifact, precision: str | None = None) -> dict[str, str | None]:
    """Backend -> None when it can run `artifact` here, else the reason it cannot."""
    return {backend: _check_backend(artifact, backend, precision)[0] for backend in BACKENDS}


def resolve_backend(artifact: Artifact, backend: str, precision: str | None = None) -> tuple[str, Path | None]:
    """The backend to use and its engine: 'auto' -> an engine that loads here, else ONNX Runtime CUDA,
    else CPU; 'onnxruntime' -> CUDA if usable, else CPU."""
    candidates = ALIASES.get(backend, (backend,))
    if any(c not in BACKENDS for c in candidates):
        raise VitdeployError(f"unknown backend {backend!r}: expected one of auto, onnxruntime, "
                             f"{', '.join(BACKENDS)}")
    problems = {}
    for candidate in candidates:
        problems[candidate], engine = _check_backend(artifact, candidate, precision)
        if problems[candidate] is None:
            return candidate, engine
    status = {**backend_status(artifact, precision), **problems}
    available = [name for name in BACKENDS if status[name] is None]
    why = "; ".join(f"{name}: {problems[name]}" for name in candidates)
    raise VitdeployError(f"backend {backend!r} is not available for {artifact.name} ({why}): "
                         f"available: {', '.join(available) or 'none'}")


class Model:
    """A loaded artifact on one backend. Close it (or use `with`) to free the runtime's memory."""

    def __init__(self, artifact: Artifact, backend: str = "auto", precision: str | None = None,
                 threads: int | None = None):
        self.artifact = artifact
        self.backend, self.engine = resolve_backend(artifact, backend, precision)
        self.levels = tuple(Level(o["name"], o["kind"], o["channels"], o["stride"], o["index"])
                            for o in artifact.outputs)
        if self.backend == "tensorrt":
            from vitdeploy.runners.tensorrt import TensorRTRunner

            self._runner = TensorRTRunner(self.engine)
        elif self.backend == "openvino":
            from vitdeploy.runners.openvino import OpenVINORunner

            self._runner = OpenVINORunner(self.engine, threads)
        else:
            from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner

            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] \
                if self.backend == "onnxruntime-cuda" else ["CPUExecutionProvider"]
            self._runner = OnnxRuntimeRunner(artifact.meta, artifact.onnx_path, providers, threads, self.backend)
        self._runner.activate()
        # Deactivates when the model is closed or garbage collected, whichever comes first.
        self._release = weakref.finalize(self, self._runner.deactivate)

    @property
    def input(self) -> dict[str, Any]:
        """The input description: size rule and range, batch range, mean/std."""
        return self.artifact.input

    def batch(self, images: Images) -> np.ndarray:
        """The batch the artifact takes for `images` (float32 NCHW, or uint8 NHWC when it normalises in
        its graph): a float32 batch as is, images and paths preprocessed."""
        from vitdeploy.preprocess import check_input, preprocess

        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            check_input(images, self.input)  # also catches raw 0..255 pixels given as float
            return images
        single = isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim != 4)
        items = [images] if single else list(images)  # a uint8 NHWC array is a list of images
        if not items:
            raise VitdeployError("no images given: expected an image, a list of images or a float32 NCHW batch")
        tensors = [preprocess(item, self.input)[0] for item in items]
        sizes = sorted({image_hw(self.input, t.shape) for t in tensors})
        if len(sizes) > 1:
            raise VitdeployError(f"images preprocess to different sizes {[f'{h}x{w}' for h, w in sizes]}: "
                                 "expected images of one size per call (infer them one at a time)")
        return np.concatenate(tensors) if len(tensors) > 1 else tensors[0]

    def infer(self, images: Images) -> Pyramid:
        """Run a float32 NCHW batch, a uint8 HxWx3 RGB image (or NHWC batch), an image path, or a list of those."""
        if not self._release.alive:
            raise VitdeployError("model is closed: load the artifact again")
        outputs = self._runner.infer({self.input["name"]: self.batch(images)})
        return Pyramid(self.levels, outputs)

    def close(self) -> None:
        self._release()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.engine.name if self.engine else self.artifact.onnx_path.name
        return f"Model({self.artifact.name}, backend={self.backend}, {where})"


def load(artifact: str | os.PathLike[str], backend: str = "auto", precision: str | None = None,
         threads: int | None = None) -> Model:
    """Load an artifact directory (or bare .onnx) for inference.

    backend: auto (the first that runs here of: a TensorRT engine, ONNX Runtime CUDA, an OpenVINO
    engine, ONNX Runtime CPU), tensorrt, openvino, onnxruntime (CUDA if usable, else CPU),
    onnxruntime-cuda or onnxruntime-cpu. precision picks the engine (fp32, fp16, bf16; default: the
    first of these built). threads: intra-op threads of ONNX Runtime or OpenVINO.
    """
    return Model(load_artifact(Path(artifact)), backend, precision, threads)
