"""Engines of the SAM2 decoder graph, built by `vitdeploy build` beside the encoder's: `decoder.<backend>.
<precision>.<ext>` and its record `<file>.json` (builder, version, precision, IO, files with sha256, and the
sha256 of the decoder.onnx it was built from, so a stale engine is refused).

OpenVINO (CPU): an IR at fp32 or bf16 (the CPU plugin's inference precision, as for the encoder).
TensorRT-RTX: fp32, strongly typed, one profile with the number of points dynamic (1..max_points); it builds
on a machine without a GPU (the serialized engine then runs on any GPU TensorRT-RTX supports).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vitdeploy.atomic import staged_files, write_bytes_atomic
from vitdeploy.description import FileRecord
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import check_files, describe_files
from vitdeploy.optional import require
from vitdeploy.sam2.graph import DecoderDescription, GraphIO, decoder_path

BACKENDS = {"openvino": ("xml", ("fp32", "bf16")), "tensorrt_rtx": ("engine", ("fp32",))}
OPT_POINTS = 3


@dataclass(frozen=True)
class DecoderEngine:
    file: str
    backend: str
    backend_version: str
    precision: str
    inference_precision: str | None  # OpenVINO's INFERENCE_PRECISION_HINT
    io: dict[str, GraphIO]
    files: dict[str, FileRecord]
    source_sha256: str  # decoder.onnx's
    build_seconds: float


def engine_name(backend: str, precision: str) -> str:
    return f"decoder.{backend}.{precision}.{BACKENDS[backend][0]}"


def decoder_engine(directory: Path, backend: str, precision: str,
                   decoder: DecoderDescription) -> DecoderEngine | None:
    """The decoder's engine for (backend, precision), checked (files, built from this decoder.onnx); None if
    none was built."""
    record = directory / f"{engine_name(backend, precision)}.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    engine = DecoderEngine(**{**data, "io": {k: GraphIO(v["dtype"], tuple(v["shape"])) for k, v in data["io"].items()},
                              "files": {k: FileRecord(**v) for k, v in data["files"].items()}})
    remedy = f"rebuild it with `vitdeploy build --backend {backend} --precision {precision}`"
    if engine.source_sha256 != decoder.file.sha256:
        raise VitdeployError(f"{directory / engine.file} was built from another decoder.onnx (sha256 differs): "
                             f"{remedy}")
    check_files(directory, engine.files, remedy)
    return engine


def build_decoder_engine(directory: Path, backend: str, precision: str, decoder: DecoderDescription) -> Path | None:
    """Build the decoder's engine beside the encoder's; None where the builder has no decoder engine at this
    precision (the Predictor then runs decoder.onnx)."""
    if backend not in BACKENDS or precision not in BACKENDS[backend][1]:
        return None
    name = engine_name(backend, precision)
    started = time.perf_counter()
    with staged_files(directory, name) as staging:
        if backend == "openvino":
            version, inference, io, written = _openvino(directory, staging / name, precision)
        else:
            (version, io), inference, written = _tensorrt_rtx(directory, staging / name, decoder), None, [staging / name]
        engine = DecoderEngine(file=name, backend=backend, backend_version=version, precision=precision,
                               inference_precision=inference, io=io,
                               files=describe_files(written), source_sha256=decoder.file.sha256,
                               build_seconds=round(time.perf_counter() - started, 2))
        write_bytes_atomic(staging / f"{name}.json", (json.dumps(asdict(engine), indent=2) + "\n").encode())
    return directory / name


def _openvino(directory: Path, xml: Path, precision: str) -> tuple[str, str, dict[str, GraphIO], list[Path]]:
    from vitdeploy.engine.openvino import INFERENCE_PRECISION, check_precision, model_io, version_of

    ov = require("openvino")
    check_precision(ov, precision)
    model = ov.convert_model(str(decoder_path(directory)))
    io = {name: GraphIO(t.dtype, t.shape) for name, t in model_io(model).items()}
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return version_of(ov), INFERENCE_PRECISION[precision], io, [xml, xml.with_suffix(".bin")]


def _tensorrt_rtx(directory: Path, path: Path, decoder: DecoderDescription) -> tuple[str, dict[str, GraphIO]]:
    """A strongly typed fp32 build with the point axis dynamic; TensorRT-RTX's parser and builder, on the CPU."""
    trt = require("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT-RTX networks are strongly typed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(decoder_path(directory))):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise VitdeployError(f"TensorRT-RTX cannot parse {decoder_path(directory)} ({errors}): re-export it")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name in ("point_coords", "point_labels"):
        shape = decoder.inputs[name].shape
        profile.set_shape(name, *[tuple(n if d == "points" else d for d in shape)
                                  for n in (1, OPT_POINTS, decoder.max_points)])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VitdeployError("TensorRT-RTX failed to build the SAM2 decoder (its errors are logged above)")
    path.write_bytes(memoryview(serialized))
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return str(trt.__version__), {t.name: GraphIO(str(t.dtype).split(".")[-1].lower(), tuple(t.shape)) for t in tensors}
