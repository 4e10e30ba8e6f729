"""Engine descriptions (`<engine file>.json`): where they live, reading them, and the builder contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitdeploy.artifact import Artifact
from vitdeploy.description import Description, EngineDescription, EngineSection, InputSpec, Profile, TensorIO
from vitdeploy.errors import VitdeployError


@dataclass(frozen=True)
class Builder:
    """One engine builder: how it builds, and what it checks before one of its engines is loaded."""

    label: str
    precisions: tuple[str, ...]
    build: Callable[..., Path] | None  # (artifact_dir, backend, precision, progress=..., **options) -> engine path;
    # None: made by another command (int8 graphs: `vitdeploy quantize`)
    check_runtime: Callable[[EngineSection], None]  # installed runtime, version and device can run it


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
    return f"model.{backend}.{precision}.{extension}"


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


def find_engines(directory: Path | None) -> list[Path]:
    """The engines in an artifact directory: `model.<backend>.<precision>.<ext>` with a description beside."""
    if directory is None:
        return []
    return sorted(p.with_suffix("") for p in directory.glob("model.*.*.*.json") if p.with_suffix("").is_file())
