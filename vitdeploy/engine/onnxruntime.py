"""ONNX Runtime "engines": int8 graphs of the artifact (`model.onnxruntime.int8.onnx`), written by
`vitdeploy quantize` (vitdeploy.quantize), checked here before a runner loads one."""

from __future__ import annotations

from vitdeploy.artifact import ArtifactDirectory
from vitdeploy.description import EngineSection
from vitdeploy.engine.descriptions import Builder, Engine, engine_file_name
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import check_files
from vitdeploy.optional import require

BACKEND = "onnxruntime"
INT8_FILE = engine_file_name(BACKEND, "int8", "onnx")


def check_runtime(engine: EngineSection) -> None:
    """ONNX Runtime reads any graph of its opset; only its presence is checked."""
    require("onnxruntime")


def int8_source(artifact: ArtifactDirectory, builder: str, symmetric: bool) -> Engine:
    """The artifact's int8 QDQ graph, which an OpenVINO or TensorRT int8 engine is built from, checked to be
    there, intact and static (symmetric too, for TensorRT)."""
    path = artifact.directory / INT8_FILE
    if not path.is_file():
        raise VitdeployError(f"{artifact.directory} has no int8 graph: make it first with `vitdeploy quantize "
                             f"{artifact.directory} --calibration FOLDER`, then build the {builder} int8 engine")
    int8 = Engine.at(path)
    engine = int8.section
    check_files(path.parent, engine.files, "quantize the artifact again")
    quantization = engine.quantization
    if quantization is None:
        raise VitdeployError(f"the description of {path.name} has no quantization record: quantize the artifact again")
    if quantization["mode"] != "static":
        raise VitdeployError(f"{path.name} is dynamically quantised, which runs in ONNX Runtime only: quantize again "
                             f"with --calibration (static QDQ) for {builder}")
    if symmetric and quantization["activations"] != "s8":
        raise VitdeployError(f"{path.name} quantises activations as {quantization['activations']} with zero points, "
                             f"which {builder} rejects: quantize again with --activations s8")
    return int8


BUILDERS = {BACKEND: Builder(label="ONNX Runtime int8", precisions=("int8",), build=None, check_runtime=check_runtime)}
