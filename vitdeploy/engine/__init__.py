"""Engines: built from an artifact's ONNX, described, and checked before anything loads them.

Builders, named as the runtimes that run their engines (vitdeploy.backends): `tensorrt` and `tensorrt_rtx`
(vitdeploy.engine.tensorrt), `openvino` (vitdeploy.engine.openvino), `aoti` (vitdeploy.engine.aoti:
torch.export + AOTInductor), `onnxruntime` (vitdeploy.engine.onnxruntime: the int8 graph, calibrated and
gated on photos, which the OpenVINO and TensorRT int8 engines are built from). Each writes
`model.<backend>.<precision>.<ext>` (plus the files it needs) and, through `write_engine_description`,
`<engine file>.json`, the engine's description: the artifact's description plus an `engine` section. An
engine travels as an `Engine` value (its path, the backend and precision its name gives, its description
read once). Adding a runtime is one builder module here, added to BUILDERS, plus its runner in
vitdeploy.runners and its name in vitdeploy.backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitdeploy.backends import check_backend
from vitdeploy.description import EngineDescription
from vitdeploy.engine import aoti, onnxruntime, openvino, tensorrt
from vitdeploy.engine.descriptions import (Builder, Engine, build_command, engine_description_path, engine_profile,
                                           find_engines, read_engine_description)
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import profile_table
from vitdeploy.integrity import check_files
from vitdeploy.sam2.graph import DECODER_DESCRIPTION

BUILDERS: dict[str, Builder] = {**tensorrt.BUILDERS, **openvino.BUILDERS, **onnxruntime.BUILDERS, **aoti.BUILDERS}
BUILD_CHOICES = ("auto", *BUILDERS)  # what `vitdeploy build --backend` takes; auto: tensorrt.auto_flavour

__all__ = ["BUILDERS", "BUILD_CHOICES", "Engine", "build", "build_command", "builder", "check_engine",
           "check_engine_files", "describe_engine", "engine_description_path", "engine_profile", "find_engines",
           "read_engine_description"]


def builder(backend: str) -> Builder:
    """The builder named `backend` (also the name its engines carry)."""
    return BUILDERS[check_backend(backend, tuple(BUILDERS), "engine")]


def build(artifact_dir: Path, backend: str = "auto", precision: str = "fp32", **options: Any) -> Engine:
    """Build an engine of `backend` into the artifact directory; returns the engine. `options` go to
    the builder (TensorRT: timing_cache, fp32_ops, target_gpu; AOTInductor: device; ONNX Runtime int8: the
    calibration options of vitdeploy.engine.onnxruntime.build_int8; all: progress)."""
    backend = check_backend(backend, BUILD_CHOICES, "engine")
    backend = tensorrt.auto_flavour() if backend == "auto" else backend
    chosen = builder(backend)
    if precision not in chosen.precisions:
        raise VitdeployError(f"{chosen.label} cannot build precision {precision!r}: expected one of "
                             f"{', '.join(chosen.precisions)}")
    built = chosen.build(Path(artifact_dir), backend, precision, **options)
    if (Path(artifact_dir) / DECODER_DESCRIPTION).is_file():  # a SAM2 artifact's decoder graph gets its engine too
        from vitdeploy.artifact import load_artifact
        from vitdeploy.sam2.engines import build_decoder_engine
        from vitdeploy.sam2.graph import read_decoder

        decoder = read_decoder(Path(artifact_dir), load_artifact(Path(artifact_dir)).description)
        build_decoder_engine(Path(artifact_dir), backend, precision, decoder)
    return built


def check_engine_files(engine: Engine, contents: bool = True) -> EngineDescription:
    """The engine's description, and every file it lists there with its recorded size and (if `contents`)
    sha256 (what a copy elsewhere, e.g. a Triton repository, needs); returns the description."""
    description = engine.description
    section = description.engine
    if not engine.path.is_file():
        raise VitdeployError(f"engine file {engine.path} does not exist: build it with `vitdeploy build`")
    check_files(engine.path.parent, section.files, "copy it again or rebuild it with "
                f"`{build_command(section.backend, section.precision, engine.path.parent)}`", contents)
    return description


def check_engine(engine: Engine, contents: bool = True) -> EngineDescription:
    """Everything that decides whether `engine` can load here (its files, the runtime and device); returns
    the description. `contents=False` checks the files' sizes only (see check_files)."""
    description = check_engine_files(engine, contents)
    builder(description.engine.backend).check_runtime(description.engine)
    return description


def describe_engine(description: EngineDescription) -> str:
    """A short human-readable summary of an engine's description."""
    engine = description.engine
    target = engine.compute_capability or ("portable (no GPU-specific target)" if engine.device == "cuda"
                                           else engine.device)
    lines = [
        f"{engine.file}: {builder(engine.backend).label} {engine.backend_version}, {engine.precision}, "
        f"{engine.size_bytes / 2**20:.1f} MiB, built in {engine.build_seconds:.1f}s",
        f"model: {description.timm_name} (recipe {description.recipe}), target: {target}",
        profile_table(engine.profile),
        "outputs: " + ", ".join(f"{o.name} ({o.kind}, {o.channels} ch" + (f", stride {o.stride})" if o.stride else ")")
                                for o in description.outputs),
    ]
    return "\n".join(lines)
