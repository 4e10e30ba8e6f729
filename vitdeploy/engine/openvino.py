"""OpenVINO engines for CPUs: an IR (`model.openvino.<precision>.xml` + `.bin`) and its description.

The engine is OpenVINO's IR, not a compiled-model blob: an IR loads on the same or a newer OpenVINO
and on any x86 or Arm CPU, while an exported compiled model is tied to one OpenVINO build and CPU.
The IR always keeps the fp32 weights (`compress_to_fp16=False`: fp32 is never compressed behind the
user's back). Precision is how the CPU plugin computes, `INFERENCE_PRECISION_HINT` at compile time:
`fp32` -> f32, `bf16` -> bf16 (CPUs with AVX-512 BF16 or AMX); the description records it, so the
Python runner and the C++ demo compile the same way.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from vitdeploy.artifact import load_artifact_directory
from vitdeploy.atomic import staged_files
from vitdeploy.description import EngineSection, TensorIO
from vitdeploy.engine.descriptions import Builder, Engine, check_io, engine_file_name, write_engine_description
from vitdeploy.engine.onnxruntime import int8_source
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.progress import Progress

BACKEND = "openvino"
DEVICE = "CPU"
# vitdeploy precision -> the float precision OpenVINO computes in. An int8 IR (from the QDQ graph of
# the onnxruntime int8 builder) computes its float parts (attention, LayerNorm, GELU, the patch Conv) in bf16: on
# an AMX CPU about 1.2x faster than f32 on vit_base at batch 1 and 8 (docs/benchmark.md), within the int8 gate;
# a CPU without bf16 computes them in f32 (the plugin's fallback for a hint it cannot honour).
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
CAPABILITY = {"bf16": "BF16", "int8": "INT8"}  # the CPU plugin's OPTIMIZATION_CAPABILITIES entry a precision needs


def version_of(ov: ModuleType) -> str:
    """`2026.4.1` of `2026.4.1-22982-e213a147257-releases/2026/4`."""
    version = ov.get_version()
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else version


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def check_precision(ov: ModuleType, precision: str) -> None:
    """`precision` is one the CPU plugin computes natively here (it would silently fall back to f32)."""
    needed = CAPABILITY.get(precision)
    capabilities = ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
    if needed and needed not in capabilities:
        raise VitdeployError(f"this CPU cannot compute {precision} (OpenVINO CPU capabilities: {', '.join(capabilities)}"
                             "): expected a CPU with AVX-512 BF16 or AMX; use fp32")


def model_io(model: Any) -> dict[str, TensorIO]:
    """Name -> direction, dtype and shape (-1 for a dynamic dimension) of an OpenVINO model's tensors."""
    def entry(mode: str, port: Any) -> tuple[str, TensorIO]:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return port.get_any_name(), TensorIO(mode=mode, dtype=port.get_element_type().to_dtype().name, shape=shape)

    return dict([entry("input", port) for port in model.inputs] + [entry("output", port) for port in model.outputs])


def build_openvino(artifact_dir: Path, backend: str = BACKEND, precision: str = "fp32",
                   progress: Progress | None = None) -> Engine:
    """Convert the artifact's ONNX to an OpenVINO IR with its description; returns the engine (its .xml)."""
    ov = require("openvino")
    check_precision(ov, precision)
    artifact = load_artifact_directory(artifact_dir)
    progress = progress or Progress(total=2)
    xml = artifact.directory / engine_file_name(BACKEND, precision, "xml")
    label = f"OpenVINO {version_of(ov)}"
    int8 = int8_source(artifact, "OpenVINO", symmetric=False) if precision == "int8" else None
    source = int8.path if int8 else artifact.checked_onnx
    started = time.perf_counter()
    with staged_files(artifact.directory, xml.name) as staging:
        with progress.step(f"converting {source.name} to an {label} IR"):
            model = ov.convert_model(str(source))
            io = model_io(model)
            check_io(io, artifact, label)
        with progress.step(f"writing {xml.name}, {xml.with_suffix('.bin').name} and the description"):
            ov.save_model(model, str(staging / xml.name), compress_to_fp16=False)
            engine = write_engine_description(
                staging, xml, artifact, backend=BACKEND, backend_version=version_of(ov), precision=precision,
                device=DEVICE, io=io, files=[staging / xml.name, staging / xml.with_suffix(".bin").name],
                started=started, inference_precision=INFERENCE_PRECISION[precision],
                quantization=int8.section.quantization if int8 else None)
    return engine


def check_runtime(engine: EngineSection) -> None:
    """OpenVINO is installed, not older than the one that wrote the IR, and the CPU computes its precision."""
    ov = require("openvino")
    installed, built = version_of(ov), engine.backend_version
    if _version_tuple(installed) < _version_tuple(built):
        raise VitdeployError(f"engine was built with OpenVINO {built} but {installed} is installed: an IR loads on "
                             "the same or a newer OpenVINO; upgrade openvino or rebuild the engine")
    check_precision(ov, engine.precision)


BUILDERS = {BACKEND: Builder(label="OpenVINO (CPU)", precisions=tuple(INFERENCE_PRECISION), build=build_openvino,
                             requires="openvino", check_runtime=check_runtime)}
