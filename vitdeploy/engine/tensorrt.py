"""TensorRT and TensorRT-RTX engines: built from an artifact's ONNX through polygraphy, checked before loading.

Both flavours build strongly typed networks: TensorRT-RTX has no precision flags, and TensorRT 11
removed them, so fp16/bf16 engines come from a reduced-precision ONNX (see precision.py) and the
engine's input and outputs stay as exported. The engine is built to bytes and written by us rather
than via `engine_from_network` + `save_engine`, because deserialising needs a GPU and TensorRT-RTX
builds ahead of time on a CPU.

A serialized engine loads only on the exact version that built it and on a GPU it supports; the
checks below say why an engine cannot load before anything is deserialised (TensorRT's own failure
is a log line and a None engine).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from polygraphy.backend.tensorrt_rtx import CreateConfigRTX
from polygraphy.backend.trt import CreateConfig, Profile as TrtProfile, engine_bytes_from_network
from polygraphy.backend.trt import network_from_onnx_path
from polygraphy.datatype import DataType
from polygraphy.exception import PolygraphyException
from polygraphy.logger import G_LOGGER

from vitdeploy.artifact import load_artifact_directory
from vitdeploy.atomic import staged_files
from vitdeploy.description import EngineSection, InputSpec, Profile, TensorIO
from vitdeploy.engine.descriptions import (Builder, Engine, check_io, engine_file_name, engine_profile,
                                           write_engine_description)
from vitdeploy.engine.monitor import make_progress_monitor
from vitdeploy.engine.onnxruntime import int8_source
from vitdeploy.engine.tensorrt_flavour import FLAVOURS, LABELS, use_backend
from vitdeploy.errors import VitdeployError
from vitdeploy.tools.hardware import compute_capability, format_capability, gpu_name
from vitdeploy.inputs import verification_feeds
from vitdeploy.optional import is_installed
from vitdeploy.progress import Progress

# NVIDIA's TensorRT-RTX support matrix (1.0 to 1.5 and "latest", Linux x86-64; 12.1 from 1.5):
# https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html
# RTX-class GPUs only. Data-center GPUs (A100 8.0, H100/H200 9.0) are not on it: they need full TensorRT.
# Portable engines (no --target-gpu) run on the Ampere-and-newer entries; Turing (7.5) needs an engine built
# for it. Builds, loads, `--backend auto` and `vitdeploy doctor` all check against these two lists.
RTX_SUPPORTED = ((7, 5), (8, 6), (8, 9), (12, 0), (12, 1))
RTX_PORTABLE = ((8, 6), (8, 9), (12, 0), (12, 1))


def network_io(network: Any) -> dict[str, TensorIO]:
    """Name -> direction, dtype and shape (-1 for a dynamic dimension) of a parsed network's tensors."""
    tensors = [("input", network.get_input(i)) for i in range(network.num_inputs)]
    tensors += [("output", network.get_output(i)) for i in range(network.num_outputs)]
    return {t.name: TensorIO(mode=mode, dtype=DataType.from_dtype(t.dtype, "tensorrt").name, shape=tuple(t.shape))
            for mode, t in tensors}


def _parse(source: Path, precision: str, fp32_ops: Sequence[str], scratch: Path,
           spec: InputSpec) -> tuple[Any, dict[str, Any] | None]:
    """(builder, network, parser) for `source` at `precision`: the exported graph (fp32), the int8 QDQ graph
    (int8: explicit quantisation), or a reduced-precision graph of the exported one written to `scratch` with
    external data first (models over 2 GB have no single-buffer form); and for fp16/bf16 the range record (ranges
    measured on the seeded image-like inputs that `verify` uses)."""
    if precision in ("fp32", "int8"):
        return network_from_onnx_path(str(source), strongly_typed=True), None
    import onnx  # here, with the converter: `vitdeploy doctor` and `load` import this module and need neither

    from vitdeploy.engine.precision import reduced_precision_onnx

    path = scratch / f"model.{precision}.onnx"
    half, kept_fp32 = reduced_precision_onnx(source, precision, fp32_ops,
                                              verification_feeds(spec, [spec.opt_hw], [1], seed=0))
    onnx.save(half, str(path), save_as_external_data=True, location=f"{path.name}.data")
    try:
        return network_from_onnx_path(str(path), strongly_typed=True), kept_fp32
    finally:
        path.unlink()
        path.with_name(f"{path.name}.data").unlink()


@contextlib.contextmanager
def _user_error(what: str) -> Iterator[None]:
    """polygraphy's parse and build failures as one line; TensorRT's own errors are logged above it."""
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


def _config(trt: ModuleType, backend: str, profile: dict[str, Profile], cache: str | None, target_gpu: bool,
            progress: Progress) -> Any:
    """polygraphy's builder-config loader: the profile, timing cache, progress monitor, target GPU."""
    trt_profile = TrtProfile()
    for name, shapes in profile.items():
        trt_profile.add(name, shapes.min, shapes.opt, shapes.max)
    options = {"profiles": [trt_profile], "load_timing_cache": cache,
               "progress_monitor": make_progress_monitor(trt, progress.note)}
    if backend == "tensorrt_rtx":
        return CreateConfigRTX(use_gpu=target_gpu, **options)
    return CreateConfig(**options)  # tf32=False: fp32 engines compute in true fp32


def _target(backend: str, target_gpu: bool) -> str | None:
    """The compute capability to build for (full TensorRT always builds for this GPU), None for portable."""
    if backend != "tensorrt" and not target_gpu:
        return None
    capability = compute_capability()
    if capability is None:
        why = "full TensorRT builds for the GPU at hand" if backend == "tensorrt" else "--target-gpu was given"
        raise VitdeployError(f"no CUDA GPU found, but {why}: build on a GPU machine, or use "
                             "--backend tensorrt_rtx without --target-gpu to build a portable engine on a CPU")
    if backend == "tensorrt_rtx":
        check_rtx_gpu(capability)
    return format_capability(capability)


def build_tensorrt(artifact_dir: Path, backend: str, precision: str = "fp32", *, timing_cache: Path | None = None,
                   fp32_ops: Sequence[str] | None = None, target_gpu: bool = False,
                   progress: Progress | None = None) -> Engine:
    """Build `model.<backend>.<precision>.engine` and its description in `artifact_dir`; returns the engine.

    `fp32_ops` are the ONNX op types kept in float32 in an fp16/bf16 engine (None: precision.DEFAULT_FP32_OPS).
    `target_gpu` makes a
    TensorRT-RTX engine for this machine's GPU only (a full TensorRT engine always is).
    """
    if fp32_ops is None:
        from vitdeploy.engine.precision import DEFAULT_FP32_OPS
        fp32_ops = DEFAULT_FP32_OPS
    artifact = load_artifact_directory(artifact_dir)
    trt = use_backend(backend)
    target = _target(backend, target_gpu)
    progress = progress or Progress(total=3)
    engine_path = artifact.directory / engine_file_name(backend, precision, "engine")
    profile = engine_profile(artifact.input)
    label = f"{LABELS[backend]} {trt.__version__}"
    int8 = int8_source(artifact, "TensorRT", symmetric=True) if precision == "int8" else None
    source = int8.path if int8 else artifact.checked_onnx
    started = time.perf_counter()
    with G_LOGGER.verbosity(G_LOGGER.WARNING), staged_files(artifact.directory, engine_path.name) as staging:
        with progress.step(f"parsing {artifact.onnx_path.name} ({precision}) for {label}"):
            with _user_error(f"{label} cannot parse {artifact.onnx_path} ({precision})"):
                network, kept_fp32 = _parse(source, precision, fp32_ops, staging, artifact.input)
            io = network_io(network[1])
            check_io(io, artifact, label)
        cache = _timing_cache(timing_cache, backend, progress)
        config = _config(trt, backend, profile, cache, target_gpu, progress)
        with progress.step(f"building the engine ({'for compute capability ' + target if target else 'portable'})"):
            with _user_error(f"{label} failed to build {artifact.onnx_path} ({precision})"):
                serialized = engine_bytes_from_network(network, config=config, save_timing_cache=cache)
        with progress.step(f"writing {engine_path.name} and its description"):
            (staging / engine_path.name).write_bytes(memoryview(serialized))
            engine = write_engine_description(
                staging, engine_path, artifact, backend=backend, backend_version=trt.__version__,
                precision=precision, device="cuda", io=io, files=[staging / engine_path.name], started=started,
                compute_capability=target, fp32_ops=tuple(fp32_ops) if precision in ("fp16", "bf16") else (),
                quantization=int8.section.quantization if int8 else None, kept_fp32=kept_fp32)
    return engine


def rtx_unsupported(capability: tuple[int, int]) -> str | None:
    """Why TensorRT-RTX cannot run on a GPU of this compute capability, and what to use instead; None if it can."""
    if capability in RTX_SUPPORTED:
        return None
    supported = ", ".join(format_capability(c) for c in RTX_SUPPORTED)
    return (f"{gpu_name()} has compute capability {format_capability(capability)}, which TensorRT-RTX does not "
            f"support (it runs on {supported}: RTX-class GPUs): use full TensorRT (pip install 'vitdeploy[trt]', "
            "then `vitdeploy build --backend tensorrt`) or ONNX Runtime's CUDA provider (pip install "
            "'vitdeploy[ort-gpu]')")


def check_rtx_gpu(capability: tuple[int, int]) -> None:
    """TensorRT-RTX runs on the GPUs of its support matrix only; say what to use instead on the others."""
    problem = rtx_unsupported(capability)
    if problem:
        raise VitdeployError(problem)


def choose_flavour(capability: tuple[int, int] | None, installed: Collection[str]) -> str:
    """`--backend auto` on a machine with a GPU of `capability` (None: no GPU) and these flavours installed:
    full TensorRT where it can build (on a GPU), else TensorRT-RTX (it builds on a CPU too), but never
    TensorRT-RTX for a GPU here that it cannot run on: its engine would be refused at load."""
    if "tensorrt" in installed and (capability is not None or "tensorrt_rtx" not in installed):
        return "tensorrt"  # without a GPU, its build then says that it needs one
    if "tensorrt_rtx" not in installed:
        raise VitdeployError("no TensorRT backend is installed: pip install 'vitdeploy[trt]' (full TensorRT) "
                             "or 'vitdeploy[trt-rtx]' (TensorRT-RTX)")
    problem = None if capability is None else rtx_unsupported(capability)
    if problem:
        raise VitdeployError(f"--backend auto: full TensorRT is not installed, and {problem}")
    return "tensorrt_rtx"


def auto_flavour() -> str:
    """`choose_flavour` for this machine's GPU and installed flavours."""
    return choose_flavour(compute_capability(), [flavour for flavour in FLAVOURS if is_installed(flavour)])


def check_gpu(engine: EngineSection, capability: tuple[int, int] | None) -> None:
    """The GPU at hand (its compute capability, None for no GPU) can run the engine."""
    label = LABELS[engine.backend]
    if capability is None:
        raise VitdeployError(f"no CUDA GPU found (no device or no NVIDIA driver): {label} engines need an "
                             "NVIDIA GPU to run; use the ONNX model with ONNX Runtime on a CPU")
    if engine.backend == "tensorrt_rtx":
        check_rtx_gpu(capability)
    required, actual = engine.compute_capability, format_capability(capability)
    if required is not None and required != actual:
        raise VitdeployError(f"engine was built for GPUs of compute capability {required}, this GPU is {actual}: "
                             "rebuild it on this machine with `vitdeploy build`")
    if required is None and capability not in RTX_PORTABLE:
        portable = ", ".join(format_capability(c) for c in RTX_PORTABLE)
        raise VitdeployError(f"this GPU has compute capability {actual}; a portable {label} engine runs on {portable}: "
                             "rebuild it for this GPU with `vitdeploy build --target-gpu`")


def check_runtime(engine: EngineSection) -> None:
    """The installed flavour is the exact version that built the engine, on a GPU that can run it."""
    installed = use_backend(engine.backend).__version__
    if installed != engine.backend_version:
        raise VitdeployError(f"engine was built with {LABELS[engine.backend]} {engine.backend_version} but "
                             f"{installed} is installed: engines only load on the version that built them; "
                             "rebuild it with `vitdeploy build`")
    check_gpu(engine, compute_capability())


BUILDERS = {backend: Builder(label=label, precisions=("fp32", "fp16", "bf16", "int8"), build=build_tensorrt,
                             requires=backend, check_runtime=check_runtime) for backend, label in LABELS.items()}
