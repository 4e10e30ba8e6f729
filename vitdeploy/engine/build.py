"""Building a TensorRT or TensorRT-RTX engine from an artifact's ONNX, through polygraphy.

Both backends build strongly typed networks: TensorRT-RTX has no precision flags, and TensorRT 11
removed them, so fp16/bf16 engines come from a reduced-precision ONNX (see precision.py) and the
engine's input and outputs stay float32. The engine is built to bytes and written by us rather than
via `engine_from_network` + `save_engine`, because deserialising needs a GPU and TensorRT-RTX builds
ahead of time on a CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.atomic import staged_files, write_json_atomic
from vitdeploy.engine.backend import LABELS, resolve_backend, use_backend
from vitdeploy.engine.gpu import compute_capability, format_capability
from vitdeploy.engine.monitor import make_progress_monitor
from vitdeploy.engine.precision import DEFAULT_FP32_OPS, PRECISIONS, reduced_precision_onnx
from vitdeploy.engine.sidecar import engine_file_name, sidecar_path
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import describe_files
from vitdeploy.inputs import layout_shape
from vitdeploy.progress import Progress


def engine_profile(input_spec: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    """The optimisation profile for the artifact's input: batch and height/width ranges, in its layout."""
    batch = input_spec["batch"]
    return {input_spec["name"]: {k: layout_shape(input_spec, batch[k], *input_spec[f"{k}_hw"])
                                 for k in ("min", "opt", "max")}}


def network_io(network) -> dict[str, dict[str, Any]]:
    """Name -> direction, dtype and shape (-1 for a dynamic dimension) of a parsed network's tensors."""
    from polygraphy.datatype import DataType

    tensors = [("input", network.get_input(i)) for i in range(network.num_inputs)]
    tensors += [("output", network.get_output(i)) for i in range(network.num_outputs)]
    return {t.name: {"mode": mode, "dtype": DataType.from_dtype(t.dtype, "tensorrt").name, "shape": list(t.shape)}
            for mode, t in tensors}


def _check_io(io: dict[str, dict[str, Any]], artifact: Artifact) -> None:
    inputs = [name for name, t in io.items() if t["mode"] == "input"]
    outputs = [name for name, t in io.items() if t["mode"] == "output"]
    if inputs != [artifact.input["name"]] or outputs != artifact.output_names:
        raise VitdeployError(f"{artifact.onnx_path} has inputs {inputs} and outputs {outputs}: expected "
                             f"[{artifact.input['name']!r}] and {artifact.output_names} as its vitdeploy.json "
                             "says; re-export the artifact")


def _parse(artifact: Artifact, precision: str, fp32_ops: Sequence[str], scratch: Path):
    """(builder, network, parser) for the artifact's ONNX at `precision`. A reduced-precision graph is
    written to `scratch` with external data first: models over 2 GB have no single-buffer form."""
    import onnx
    from polygraphy.backend.trt import network_from_onnx_path

    if precision == "fp32":
        return network_from_onnx_path(str(artifact.onnx_path), strongly_typed=True)
    path = scratch / f"model.{precision}.onnx"
    onnx.save(reduced_precision_onnx(artifact.onnx_path, precision, fp32_ops), str(path),
              save_as_external_data=True, location=f"{path.name}.data")
    try:
        return network_from_onnx_path(str(path), strongly_typed=True)
    finally:
        path.unlink()
        path.with_name(f"{path.name}.data").unlink()


@contextlib.contextmanager
def _user_error(what: str) -> Iterator[None]:
    """polygraphy's parse and build failures as one line; TensorRT's own errors are logged above it."""
    from polygraphy.exception import PolygraphyException

    try:
        yield
    except PolygraphyException as exc:
        raise VitdeployError(f"{what}: {exc} (TensorRT's errors are above)") from None


def _timing_cache(path: Path | None, backend: str, progress: Progress) -> str | None:
    """The timing cache to load and save, or None: timing caches are no-ops in TensorRT-RTX >= 1.2."""
    if path is None:
        return None
    if backend == "tensorrt_rtx":
        progress.note(f"      timing cache {path} not used: TensorRT-RTX has none (it times no tactics "
                      "ahead of time; kernels are compiled when the engine is first run)")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def _config(trt: ModuleType, backend: str, profile: dict[str, dict[str, list[int]]], cache: str | None,
            target_gpu: bool, progress: Progress):
    """polygraphy's builder-config loader: the profile, timing cache, progress monitor, target GPU."""
    from polygraphy.backend.tensorrt_rtx import CreateConfigRTX
    from polygraphy.backend.trt import CreateConfig, Profile

    trt_profile = Profile()
    for name, shapes in profile.items():
        trt_profile.add(name, shapes["min"], shapes["opt"], shapes["max"])
    options = {"profiles": [trt_profile], "load_timing_cache": cache,
               "progress_monitor": make_progress_monitor(trt, progress.note)}
    if backend == "tensorrt_rtx":
        return CreateConfigRTX(use_gpu=target_gpu, **options)
    return CreateConfig(**options)  # tf32=False: fp32 engines compute in true fp32


def build_engine(artifact_dir: Path, backend: str = "auto", precision: str = "fp32", *,
                 timing_cache: Path | None = None, fp32_ops: Sequence[str] = DEFAULT_FP32_OPS,
                 target_gpu: bool = False, progress: Progress | None = None) -> Path:
    """Build `model.<backend>.<precision>.engine` and its sidecar in `artifact_dir`; returns the engine path.

    `fp32_ops` are the ONNX op types kept in float32 in an fp16/bf16 engine. `target_gpu` makes a
    TensorRT-RTX engine for this machine's GPU only (a full TensorRT engine always is).
    """
    if precision not in PRECISIONS:
        raise VitdeployError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    artifact = load_artifact(Path(artifact_dir))
    if artifact.directory is None:
        raise VitdeployError(f"{artifact_dir} is a file: expected an artifact directory (with vitdeploy.json)")
    backend = resolve_backend(backend)
    trt = use_backend(backend)
    capability = compute_capability()
    if capability is None and (backend == "tensorrt" or target_gpu):
        why = "full TensorRT builds for the GPU at hand" if backend == "tensorrt" else "--target-gpu was given"
        raise VitdeployError(f"no CUDA GPU found, but {why}: build on a GPU machine, or use "
                             "--backend tensorrt_rtx without --target-gpu to build a portable engine on a CPU")
    target = format_capability(capability) if backend == "tensorrt" or target_gpu else None
    progress = progress or Progress(total=3)
    engine_path = artifact.directory / engine_file_name(backend, precision)
    profile = engine_profile(artifact.input)

    from polygraphy.backend.trt import engine_bytes_from_network
    from polygraphy.logger import G_LOGGER

    started = time.perf_counter()
    with G_LOGGER.verbosity(G_LOGGER.WARNING), staged_files(artifact.directory, engine_path.name) as staging:
        with progress.step(f"parsing {artifact.onnx_path.name} ({precision}) for {LABELS[backend]} {trt.__version__}"):
            with _user_error(f"{LABELS[backend]} {trt.__version__} cannot parse {artifact.onnx_path} ({precision})"):
                builder, network, parser = _parse(artifact, precision, fp32_ops, staging)
            io = network_io(network)
            _check_io(io, artifact)
        cache = _timing_cache(timing_cache, backend, progress)
        config = _config(trt, backend, profile, cache, target_gpu, progress)
        with progress.step(f"building the engine ({'for compute capability ' + target if target else 'portable'})"):
            with _user_error(f"{LABELS[backend]} {trt.__version__} failed to build {artifact.onnx_path} ({precision})"):
                serialized = engine_bytes_from_network((builder, network, parser), config=config,
                                                       save_timing_cache=cache)
        seconds = time.perf_counter() - started
        with progress.step(f"writing {engine_path.name} and its description"):
            (staging / engine_path.name).write_bytes(memoryview(serialized))
            description = {**artifact.meta, "engine": {
                "file": engine_path.name, "backend": backend, "backend_version": trt.__version__,
                "precision": precision, "device": "cuda", "profile": profile, "compute_capability": target,
                "fp32_ops": list(fp32_ops) if precision != "fp32" else [], "io": io,
                "files": describe_files([staging / engine_path.name]), "build_seconds": round(seconds, 2),
            }}
            write_json_atomic(staging / sidecar_path(engine_path).name, description)
    return engine_path
