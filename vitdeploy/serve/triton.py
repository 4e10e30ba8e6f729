"""`vitdeploy triton`: a Triton Inference Server model repository for an artifact.

    REPO/NAME/config.pbtxt     Triton's ModelConfig (tritonclient's model_config_pb2), in protobuf text format
    REPO/NAME/1/...            model.onnx (+ its external data), model.plan, or model.xml + model.bin
    REPO/NAME/vitdeploy.json   the (engine's) description, for clients; Triton reads only the above

Backends (a subset of vitdeploy.backends'): `onnxruntime` (platform `onnxruntime_onnx`, the artifact's
ONNX, or with precision int8 its int8 graph, built by `vitdeploy build --backend onnxruntime --precision
int8`), `tensorrt` (platform `tensorrt_plan`, a full TensorRT engine of the artifact: it loads only on a
Triton whose TensorRT is the version that built it, on that GPU type), `openvino` (backend `openvino`, an
OpenVINO IR engine).
The config comes from the model's own IO (the ONNX graph, or the engine description's `io`), checked
against the artifact description: tensors named as the pyramid, dims without the batch dimension (-1
where dynamic), `max_batch_size` the artifact's batch max, dynamic batching and an instance group.
No Triton server runs here, so none has loaded such a repository (docs/serving.md, "Triton model repository").
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from vitdeploy.artifact import Artifact, ArtifactDirectory, load_artifact_directory
from vitdeploy.atomic import staged_directory
from vitdeploy.backends import check_backend
from vitdeploy.description import Description, EngineDescription, EngineSection, TensorIO
from vitdeploy.engine import check_engine_files, find_engines
from vitdeploy.engine.descriptions import build_command, check_io, onnx_io
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.runners import ENGINE_PRECISIONS
from vitdeploy.serve.batching import single_image_error

BACKENDS = ("onnxruntime", "tensorrt", "openvino")
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}  # openvino is a backend, no platform
# An engine's files by Triton's names; others (an int8 graph's external data) keep theirs, which its graph refers to.
ENGINE_FILES = {"tensorrt": {".engine": "model.plan"}, "openvino": {".xml": "model.xml", ".bin": "model.bin"},
                "onnxruntime": {".onnx": "model.onnx"}}
KINDS = {"onnxruntime": ("auto", "cpu", "gpu"), "tensorrt": ("gpu",), "openvino": ("cpu",)}  # first: the default
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "uint8": "TYPE_UINT8",
                "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
VERSION = "1"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _engine(artifact: ArtifactDirectory, backend: str,
            precision: str | None) -> tuple[EngineDescription, dict[str, Path]]:
    """The engine of `backend` to put in the repository, checked (files, source ONNX), and its files by Triton name."""
    precisions = (precision,) if precision else ENGINE_PRECISIONS
    engines = [e for e in find_engines(artifact.directory) if e.precision in precisions]
    ranked = sorted((e for e in engines if e.backend == backend), key=lambda e: precisions.index(e.precision))
    if not ranked:
        what = f"no {precision} {backend} engine" if precision else f"no {backend} engine"
        rtx = [e.name for e in engines if e.backend == "tensorrt_rtx"]
        hint = (f"; {rtx[0]} is a TensorRT-RTX engine, which Triton's TensorRT backend does not run"
                if backend == "tensorrt" and rtx else "")
        how = build_command(backend, precision or ENGINE_PRECISIONS[0], artifact.directory)
        raise VitdeployError(f"{artifact.name} has {what}{hint}: make one with `{how}`")
    engine = ranked[0]
    description = check_engine_files(engine)  # not check_engine: the runtime is Triton's, not this machine's
    if description.export != artifact.description.export:
        raise VitdeployError(f"{engine.name} was built from another model.onnx: rebuild it with `vitdeploy build`")
    files = {ENGINE_FILES[backend].get(Path(name).suffix, name): engine.path.parent / name
             for name in description.engine.files}
    return description, files


def _dims(io: dict[str, TensorIO], name: str, where: str) -> list[int]:
    shape = io[name].shape
    if not shape or shape[0] != -1:
        raise VitdeployError(f"{name} has shape {list(shape)} in {where}: expected a dynamic batch dimension first")
    return list(shape[1:])


def model_config(artifact: Artifact, backend: str, io: dict[str, TensorIO], where: str, name: str,
                 engine: EngineSection | None, instances: int = 1, kind: str | None = None,
                 batch_wait_ms: float = 1.0) -> Any:
    """The ModelConfig for `artifact` served by `backend` from a model whose tensors are `io` (read from `where`):
    `engine`, or model.onnx if None."""
    config_pb2 = require("tritonclient.grpc.model_config_pb2")
    check_io(io, artifact, where)
    kind = kind or KINDS[backend][0]
    if kind not in KINDS[backend]:
        raise VitdeployError(f"--kind {kind}: Triton's {backend} backend runs instances of kind "
                             f"{' or '.join(KINDS[backend])}")
    spec = artifact.input
    problem = single_image_error(spec.batch, "Triton's dynamic batcher sends any batch from 1")
    if problem:
        raise VitdeployError(f"{artifact.name}: {problem}")
    config = config_pb2.ModelConfig(name=name, max_batch_size=spec.batch.max)
    if backend in PLATFORMS:
        config.platform = PLATFORMS[backend]
    else:
        config.backend = backend
    for tensor_name, configs in ((spec.name, config.input), *((o.name, config.output) for o in artifact.outputs)):
        dtype = io[tensor_name].dtype
        if dtype not in TRITON_TYPES:
            raise VitdeployError(f"{tensor_name} is {dtype} in {where}: Triton has no such data type")
        configs.add(name=tensor_name, data_type=config_pb2.DataType.Value(TRITON_TYPES[dtype]),
                    dims=_dims(io, tensor_name, where))
    config.dynamic_batching.max_queue_delay_microseconds = round(batch_wait_ms * 1000)
    config.instance_group.add(count=instances, kind=config_pb2.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}"))
    if backend == "openvino":  # compile as vitdeploy's runner and the C++ demo do
        config.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
        if engine is not None and engine.inference_precision == "bf16":
            config.parameters["HINT_BF16"].string_value = "YES"
    return config


def write_repository(artifact_dir: Path, repo: Path, backend: str = "onnxruntime", name: str | None = None,
                     precision: str | None = None, instances: int = 1, kind: str | None = None,
                     batch_wait_ms: float = 1.0, force: bool = False) -> Path:
    """REPO/NAME for the artifact on `backend` (see the module docstring); returns the model directory."""
    backend = check_backend(backend, BACKENDS, "Triton")
    artifact = load_artifact_directory(artifact_dir)
    name = name or artifact.name
    if not _NAME.fullmatch(name):
        raise VitdeployError(f"model name {name!r}: expected letters, digits, '_', '.' and '-' (a directory name)")
    if backend == "onnxruntime" and precision not in (None, "fp32", "int8"):
        raise VitdeployError(f"--precision {precision}: Triton's ONNX Runtime backend gets model.onnx (fp32) or the "
                             "int8 graph (int8); other precisions need an engine")
    description: Description
    engine: EngineSection | None
    if backend == "onnxruntime" and precision != "int8":
        description, engine = artifact.description, None
        files = {file: artifact.directory / file for file in artifact.export.files}
        io, where = onnx_io(artifact.checked_onnx), str(artifact.onnx_path)
    else:
        description, files = _engine(artifact, backend, precision)
        engine = description.engine
        io, where = engine.io, f"the description of {engine.file}"
    config = model_config(artifact, backend, io, where, name, engine, instances, kind, batch_wait_ms)
    text = text_format.MessageToString(config)
    with staged_directory(repo / name, force) as staging:
        (staging / VERSION).mkdir()
        for target, source in files.items():
            shutil.copyfile(source, staging / VERSION / target)
        (staging / "config.pbtxt").write_text(text)
        (staging / "vitdeploy.json").write_text(description.to_json())
    return repo / name
