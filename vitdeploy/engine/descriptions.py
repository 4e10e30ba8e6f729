"""Engines as values: the file-name format, finding an artifact's engines, reading and writing their descriptions
(`<engine file>.json`), and the builder contract."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vitdeploy.artifact import Artifact
from vitdeploy.atomic import write_bytes_atomic
from vitdeploy.description import Description, EngineDescription, EngineSection, InputSpec, Profile, TensorIO
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import describe_files

# The extension may hold digits: AOTInductor's packages are .pt2.
ENGINE_NAME = re.compile(r"model\.(?P<backend>[a-z0-9_]+)\.(?P<precision>[a-z0-9]+)\.(?P<extension>[a-z0-9]+)")


@dataclass(frozen=True)
class Builder:
    """One engine builder: how it builds, and what it checks before one of its engines is loaded."""

    label: str
    precisions: tuple[str, ...]
    build: Callable[..., Engine]  # (artifact_dir, backend, precision, progress=..., **options) -> engine
    requires: str  # the optional module its build imports (vitdeploy.optional names its extra)
    check_runtime: Callable[[EngineSection], None]  # installed runtime, version and device can run it


@dataclass(frozen=True)
class Engine:
    """An engine file: its path, the backend and precision its name gives (`model.<backend>.<precision>.<ext>`,
    parsed here only), and its description, read once when first asked for (a broken one is then an error
    about this engine, not about the artifact that holds it)."""

    path: Path
    backend: str
    precision: str

    @classmethod
    def at(cls, path: Path) -> Engine:
        """The engine at `path`, which must be named as the builders name engines."""
        path = Path(path)
        match = ENGINE_NAME.fullmatch(path.name)
        if match is None:
            raise VitdeployError(f"{path.name} is not an engine's file name: expected model.<backend>.<precision>."
                                 "<ext> as `vitdeploy build` writes it")
        return cls(path, match["backend"], match["precision"])

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def description(self) -> EngineDescription:
        return read_engine_description(self.path)

    @property
    def section(self) -> EngineSection:
        """The description's `engine` section."""
        return self.description.engine


def check_io(io: dict[str, TensorIO], artifact: Artifact, reader: str) -> None:
    """The tensors `reader` found in the ONNX are the ones the artifact's description names."""
    inputs = [name for name, t in io.items() if t.mode == "input"]
    outputs = [name for name, t in io.items() if t.mode == "output"]
    if inputs != [artifact.input.name] or outputs != artifact.output_names:
        raise VitdeployError(f"{reader} reads inputs {inputs} and outputs {outputs} from {artifact.onnx_path}: "
                             f"expected [{artifact.input.name!r}] and {artifact.output_names} as its vitdeploy.json "
                             "says; re-export the artifact")


def onnx_io(path: Path) -> dict[str, TensorIO]:
    """Name -> direction, dtype and shape (-1 for a symbolic dimension) of an ONNX graph's inputs and outputs."""
    import onnx  # here: loading and running an artifact needs no onnx module (it takes a second to import)

    graph = onnx.load(str(path), load_external_data=False).graph
    io = {}
    for mode, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            tensor = value.type.tensor_type
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
            io[value.name] = TensorIO(mode=mode, dtype=dtype, shape=tuple(
                d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim))
    return io


def engine_profile(spec: InputSpec) -> dict[str, Profile]:
    """The optimisation profile for the artifact's input: batch and height/width ranges, in its layout."""
    return {spec.name: Profile(*(tuple(spec.shape(getattr(spec.batch, k), *getattr(spec, f"{k}_hw")))
                                 for k in ("min", "opt", "max")))}


def engine_description_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def engine_file_name(backend: str, precision: str, extension: str) -> str:
    """The one file-name format of engines (Engine.at reads it back)."""
    return f"model.{backend}.{precision}.{extension}"


def build_command(backend: str, precision: str, artifact: Path | None = None) -> str:
    """The command that makes an engine of `backend` at `precision` (in `artifact`), for messages that say how."""
    calibration = " --calibration FOLDER" if backend == "onnxruntime" else ""  # the int8 graph's builder
    where = f" {artifact}" if artifact else ""
    return f"vitdeploy build{where} --backend {backend} --precision {precision}{calibration}"


def write_engine_description(staging: Path, engine_path: Path, artifact: Artifact, *, backend: str,
                             backend_version: str, precision: str, device: str, io: dict[str, TensorIO],
                             files: Sequence[Path], started: float, **extra: Any) -> Engine:
    """Every builder's last step: the description of the engine it staged (its `files`, in `staging`) written
    beside them: the artifact's description plus the `engine` section (`extra`: the builder's own fields). Returns
    the engine as it is once the staging directory is moved into place at `engine_path`."""
    section = EngineSection(file=engine_path.name, backend=backend, backend_version=backend_version,
                            precision=precision, device=device, profile=engine_profile(artifact.input), io=io,
                            files=describe_files(files), build_seconds=round(time.perf_counter() - started, 2),
                            **extra)
    write_bytes_atomic(staging / engine_description_path(engine_path).name,
                       artifact.description.with_engine(section).to_json().encode())
    return Engine(engine_path, backend, precision)


def read_engine_description(engine_path: Path) -> EngineDescription:
    """The description beside `engine_path`, checked for format and an `engine` section."""
    path = engine_description_path(engine_path)
    if not path.is_file():
        raise VitdeployError(f"{engine_path.name} has no description {path.name} beside it: rebuild it with "
                             "`vitdeploy build` (an engine is only loaded together with its description)")
    description = Description.read(path)
    if description.engine is None:
        raise VitdeployError(f"{path} has no 'engine' section: expected an engine's description; rebuild the engine")
    return description.with_engine(description.engine)


def find_engines(directory: Path | None) -> list[Engine]:
    """The engines in an artifact directory: `model.<backend>.<precision>.<ext>` with a description beside."""
    if directory is None:
        return []
    return [Engine.at(p.with_suffix("")) for p in sorted(directory.glob("model.*.*.*.json"))
            if p.with_suffix("").is_file() and ENGINE_NAME.fullmatch(p.with_suffix("").name)]
