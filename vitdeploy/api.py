"""The Python runtime: `vitdeploy.load(artifact).infer(images)` -> the named pyramid levels, in order.

A thin layer over the runners (vitdeploy.runners.*), which check every batch against the artifact's
input rules before a runtime sees it, and over vitdeploy.preprocess for images and image files.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.description import InputSpec, OutputLevel
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import check_normalised_values
from vitdeploy.preprocess import preprocess
from vitdeploy.runners import select

Image = np.ndarray | str | os.PathLike[str]
Images = Image | Sequence[Image]


class Pyramid(Mapping[str, np.ndarray]):
    """The outputs of one `infer` call: name -> array, iterated in pyramid order (fine to coarse)."""

    def __init__(self, levels: tuple[OutputLevel, ...], arrays: Mapping[str, np.ndarray]):
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


class Model:
    """A loaded artifact on one backend. Close it (or use `with`) to free the runtime's memory."""

    def __init__(self, artifact: Artifact, backend: str = "auto", precision: str | None = None,
                 threads: int | None = None):
        self.artifact = artifact
        runtime, self.engine = select(artifact, backend, precision)
        self.backend = runtime.name
        self.levels = artifact.outputs
        self._runner = runtime.create(artifact, self.engine, threads)
        self._runner.activate()
        # Deactivates when the model is closed or garbage collected, whichever comes first.
        self._release = weakref.finalize(self, self._runner.deactivate)

    @property
    def input(self) -> InputSpec:
        """The input description: size rule and range, batch range, mean/std."""
        return self.artifact.input

    def batch(self, images: Images) -> np.ndarray:
        """The batch the artifact takes for `images` (float32 NCHW, or uint8 NHWC when it normalises in
        its graph): a float32 batch as is, images and paths preprocessed."""
        if isinstance(images, np.ndarray) and images.dtype != np.uint8:
            check_normalised_values(self.input, images)  # raw 0..255 pixels given as float fail here
            return images
        items: list[Image]
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim != 4):
            items = [images]
        else:
            items = list(images)  # a uint8 NHWC array is a list of images
        if not items:
            raise VitdeployError("no images given: expected an image, a list of images or a float32 NCHW batch")
        tensors = [preprocess(item, self.input)[0] for item in items]
        sizes = sorted({self.input.hw(t.shape) for t in tensors})
        if len(sizes) > 1:
            raise VitdeployError(f"images preprocess to different sizes {[f'{h}x{w}' for h, w in sizes]}: "
                                 "expected images of one size per call (infer them one at a time)")
        return np.concatenate(tensors) if len(tensors) > 1 else tensors[0]

    def infer(self, images: Images) -> Pyramid:
        """Run a float32 NCHW batch, a uint8 HxWx3 RGB image (or NHWC batch), an image path, or a list of those."""
        self._check_open()
        return self.run(self.batch(images))

    def run(self, batch: np.ndarray) -> Pyramid:
        """Run a batch as the artifact takes it (what `batch` returns; servers join those): checked by the
        runner, not preprocessed again."""
        self._check_open()
        return Pyramid(self.levels, self._runner.infer({self.input.name: batch}))

    def _check_open(self) -> None:
        if not self._release.alive:
            raise VitdeployError("model is closed: load the artifact again")

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

    backend: a runtime of vitdeploy.backends: auto (the first that runs here of: a TensorRT or TensorRT-RTX
    engine, ONNX Runtime CUDA, an AOTInductor package, an OpenVINO engine, ONNX Runtime CPU), tensorrt,
    tensorrt_rtx, aoti, openvino, onnxruntime (CUDA if usable, else CPU), onnxruntime_cuda or onnxruntime_cpu.
    precision picks the engine (fp32, fp16; bf16 and int8 only when asked for; default: the first of fp32,
    fp16 built). threads: intra-op threads of ONNX Runtime or OpenVINO.
    """
    return Model(load_artifact(Path(artifact)), backend, precision, threads)
