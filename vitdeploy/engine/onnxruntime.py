"""ONNX Runtime engines: the artifact's int8 graph (`model.onnxruntime.int8.onnx`), quantised with ONNX Runtime
and judged per level on held-out photos (`vitdeploy build --backend onnxruntime --precision int8`), and
checked here before a runner loads it or the OpenVINO and TensorRT builders start from it.

Static quantisation (the default) writes a QDQ graph calibrated on photos. What is quantised was
measured on vit_base and hiera_base (docs/int8.md): only MatMuls with a constant weight (qkv,
proj, fc1, fc2, Hiera's stage projections), int8 per output channel; attention MatMuls (q@k^T,
attn@v), LayerNorm, Softmax, GELU, residual Adds and the patch-embedding Conv stay float (each costs
accuracy when quantised and buys no speed), and MatMul outputs are not re-quantised. Activations
are symmetric int8 by default, so one graph runs in ONNX Runtime, OpenVINO and TensorRT (whose
parser rejects non-zero zero points); `activations="u8"` is 5-10% faster in ONNX Runtime alone.
Dynamic quantisation needs no calibration (activations are quantised at run time) and runs in ONNX
Runtime only. Either way the graph is written only if every level passes the recipe's int8 gate
(`[tolerance.int8]`: min cosine, max relative L2 error) against eager fp32 on held-out photos.

The quantising code imports onnx, torch (the gate's eager reference: vitdeploy.parity) and ONNX Runtime's
quantiser inside `build_int8`, after `ensure_export`: the runtime imports this module to run int8 graphs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitdeploy.artifact import Artifact, ArtifactDirectory, load_artifact_directory
from vitdeploy.atomic import staged_files
from vitdeploy.calibration import photo_feeds, photo_records, split_photos
from vitdeploy.description import EngineSection
from vitdeploy.engine.descriptions import (Builder, Engine, build_command, engine_file_name, onnx_io,
                                           write_engine_description)
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import check_files
from vitdeploy.optional import ensure_export, require
from vitdeploy.progress import Progress

if TYPE_CHECKING:
    from vitdeploy.engine.smoothing import Smoothing
    from vitdeploy.parity import VerifyReport

BACKEND = "onnxruntime"
INT8_FILE = engine_file_name(BACKEND, "int8", "onnx")
METHODS = ("minmax", "entropy", "percentile")
ACTIVATIONS = ("s8", "u8")
QUANTIZED_OPS = ("MatMul",)
LARGE_BYTES = 1 << 30  # quantise through external data past this: protobuf's 2 GB limit applies to the whole graph


def check_runtime(engine: EngineSection) -> None:
    """ONNX Runtime reads any graph of its opset; only its presence is checked."""
    require("onnxruntime")


def int8_source(artifact: ArtifactDirectory, builder: str, symmetric: bool) -> Engine:
    """The artifact's int8 QDQ graph, which an OpenVINO or TensorRT int8 engine is built from, checked to be
    there, intact and static (symmetric too, for TensorRT)."""
    path = artifact.directory / INT8_FILE
    if not path.is_file():
        raise VitdeployError(f"{artifact.directory} has no int8 graph: make it first with "
                             f"`{build_command(BACKEND, 'int8', artifact.directory)}`, then build the {builder} int8 "
                             "engine")
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


def _constants(graph: Any) -> set[str]:
    return {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def float_nodes(path: Path, exclude: Sequence[str]) -> list[str]:
    """The MatMuls that stay float: attention's (no constant weight: ONNX Runtime's MatMulConstBOnly is not
    honoured by static QDQ), and every node whose op type or name matches an `exclude` pattern."""
    import onnx  # here: the runtime side reads graphs without it (a second to import)

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = _constants(graph)
    return [n.name for n in graph.node
            if (n.op_type == "MatMul" and n.input[1] not in constants)
            or any(n.op_type == pattern or fnmatch.fnmatch(n.name, pattern) for pattern in exclude)]


def _pre_process(source: Path, target: Path, large: bool) -> None:
    """ONNX Runtime's recommended pre-pass; symbolic shape inference fails on Hiera's graph (a Reshape it
    cannot follow), and the pass is only an optimisation, so it is retried without it. The pass runs in the
    target's (staging) folder because a failed symbolic inference dumps sym_shape_infer_temp.onnx and its
    external data into the working directory."""
    pre_process = require("onnxruntime.quantization.shape_inference").quant_pre_process
    source, target = source.resolve(), target.resolve()  # before the chdir: the paths may be relative
    with contextlib.chdir(target.parent):
        for skip_symbolic in (False, True):
            try:
                pre_process(str(source), str(target), skip_symbolic_shape=skip_symbolic, save_as_external_data=large)
                return
            except Exception:  # noqa: BLE001 (shape inference raises what it meets; the retry decides)
                if skip_symbolic:
                    raise


class _Feeds:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed photos."""

    def __init__(self, feeds: list[dict[str, Any]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _quantize(pre: Path, out: Path, feeds: list[dict[str, Any]] | None, method: str, activations: str,
              excluded: list[str], large: bool) -> None:
    quantization = require("onnxruntime.quantization")
    if feeds is None:
        quantization.quantize_dynamic(str(pre), str(out), op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                                      weight_type=quantization.QuantType.QInt8, nodes_to_exclude=excluded,
                                      use_external_data_format=large)
        return
    quantization.quantize_static(
        str(pre), str(out), _Feeds(feeds), quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QInt8 if activations == "s8" else quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8, per_channel=True,
        calibrate_method=getattr(quantization.CalibrationMethod, {"minmax": "MinMax", "entropy": "Entropy",
                                                                   "percentile": "Percentile"}[method]),
        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded, use_external_data_format=large,
        extra_options={"OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                       "ActivationSymmetric": activations == "s8", "QuantizeBias": False})


def _smooth(pre: Path, excluded: list[str], feeds: list[dict[str, Any]], smoothing: Smoothing,
            large: bool) -> tuple[Path, dict[str, Any]]:
    """The graph to quantise: `pre`, or beside it `smoothed.onnx` (vitdeploy.engine.smoothing), checked to compute
    the same in fp32; and the smoothing record for the description."""
    import onnx

    from vitdeploy.engine.smoothing import MIN_PHOTOS, check_function, smooth_graph

    model = onnx.load(str(pre))
    quantized = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in excluded]
    record = smooth_graph(model, quantized, feeds, smoothing, pre.parent)
    if not record.get("smoothed"):
        return pre, record
    smoothed = pre.with_name("smoothed.onnx")
    onnx.save(model, str(smoothed), save_as_external_data=large)
    record["fp32_max_rel_l2"] = float(f"{check_function(pre, smoothed, feeds[:MIN_PHOTOS]):.2e}")
    return smoothed, record


def gate_failures(report: VerifyReport) -> list[str]:
    """One phrase per output that missed its gate on some photo: `block11 (cosine 0.9871, rel_l2 0.16)`."""
    worst: dict[str, Any] = {}
    for check in report.checks:
        if not check.passed and (check.output not in worst or check.min_cosine < worst[check.output].min_cosine):
            worst[check.output] = check
    return [f"{name} (cosine {c.min_cosine:.4f}, rel_l2 {c.max_rel_l2:.3f})" for name, c in worst.items()]


def build_int8(artifact_dir: Path, backend: str = BACKEND, precision: str = "int8", progress: Progress | None = None,
               *, calibration: Path | None = None, samples: int = 32, held_out: int = 4, method: str = "minmax",
               activations: str = "s8", exclude: Sequence[str] = (), dynamic: bool = False,
               smooth: str = "auto") -> Engine:
    """Write `model.onnxruntime.int8.onnx` and its description (with the held-out gate per level, none for a
    dynamic graph quantised without photos) into the artifact; returns the engine. Needs vitdeploy[export]:
    the gate's reference is eager PyTorch."""
    ensure_export()
    from vitdeploy.engine.smoothing import Smoothing, check_photo_count

    if method not in METHODS or activations not in ACTIVATIONS:
        raise VitdeployError(f"method {method!r}, activations {activations!r}: expected one of {', '.join(METHODS)} "
                             f"and one of {', '.join(ACTIVATIONS)}")
    if calibration is None and not dynamic:
        raise VitdeployError("static int8 needs calibration photos: pass --calibration FOLDER (or --dynamic, which "
                             "needs none)")
    smoothing = Smoothing.parse(smooth)
    if dynamic and smoothing.mode == "alpha":
        raise VitdeployError(f"--smooth {smooth} with --dynamic: smoothing is measured on calibration photos, which "
                             "dynamic int8 does not use; drop --smooth or quantize statically")
    artifact = load_artifact_directory(artifact_dir)
    ort = require("onnxruntime")
    split = split_photos(calibration, 0 if dynamic else samples, held_out) if calibration else None
    photos = split.calibration if split and not dynamic else ()
    if photos and smoothing.mode != "off":
        check_photo_count(len(photos))
    progress = progress or Progress(total=2 if split else 1)
    out = artifact.directory / INT8_FILE
    large = sum(f.size_bytes for f in artifact.export.files.values()) > LARGE_BYTES
    source = artifact.checked_onnx  # before any work, and outside build_seconds, as the engine builders do
    started = time.perf_counter()
    with staged_files(artifact.directory, out.name) as staging:
        pre = staging / "pre.onnx"
        what = "dynamic int8" if dynamic else (f"static int8 ({method}, {len(photos)} photos, {activations}, smoothing "
                                               f"{smooth})")
        with progress.step(f"quantising {artifact.onnx_path.name} to {what} with ONNX Runtime {ort.__version__}"):
            _pre_process(source, pre, large)
            excluded = float_nodes(pre, exclude)
            feeds = None if dynamic else photo_feeds(artifact.input, photos)
            source_graph, smoothed = (pre, {"mode": "off"}) if feeds is None else _smooth(pre, excluded, feeds,
                                                                                           smoothing, large)
            _quantize(source_graph, staging / out.name, feeds, method, activations, excluded, large)
            for scratch in staging.iterdir():  # the pre-pass's files and any dump of its shape inference
                if not scratch.name.startswith(out.name):
                    scratch.unlink()
        report = None
        if split:
            with progress.step(f"checking every level on {len(split.held_out)} held-out photos against eager fp32"):
                report = _gate(artifact, staging / out.name, split.held_out)
        engine = write_engine_description(
            staging, out, artifact, backend=BACKEND, backend_version=ort.__version__, precision="int8", device="CPU",
            io=onnx_io(staging / out.name), files=sorted(staging.glob(f"{out.name}*")), started=started,
            quantization={
                "mode": "dynamic" if dynamic else "static", "format": "QOperator (dynamic)" if dynamic else "QDQ",
                "method": None if dynamic else method, "activations": "dynamic" if dynamic else activations,
                "weights": "s8 per channel", "quantized_ops": list(QUANTIZED_OPS),
                "float_nodes": len(excluded), "exclude": list(exclude), "smoothing": smoothed,
                "calibration": photo_records(split.calibration) if split and not dynamic else [],
                "held_out": photo_records(split.held_out) if split else [],
                "gates": gate_summary(report)})
    return engine


def _gate(artifact: Artifact, path: Path, photos: tuple[Path, ...]) -> VerifyReport:
    """The int8 graph vs eager fp32 on held-out photos; raises (nothing is written) when a level misses its gate."""
    from vitdeploy.parity import compare  # the export side (the eager reference): after ensure_export
    from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(artifact.description, path, precision="int8", name="onnxruntime-int8")
    report = compare(artifact.description, artifact.directory or artifact.onnx_path, runner, "onnxruntime int8",
                     feeds=photo_feeds(artifact.input, photos))
    if not report.passed:
        tolerance = artifact.description.tolerance["int8"]
        raise VitdeployError(f"the int8 graph misses its accuracy gate (cosine >= {tolerance.min_cosine}, rel_l2 <= "
                             f"{tolerance.max_rel}) on held-out photos at {', '.join(gate_failures(report))}: keep "
                             "more nodes float with --exclude, smooth activation outliers with --smooth 0.5, calibrate "
                             "on more photos, or relax [tolerance.int8]; nothing was written")
    return report


def gate_summary(report: VerifyReport | None) -> dict[str, dict[str, float]]:
    """Per output, the worst cosine and relative L2 error over the held-out photos."""
    summary: dict[str, dict[str, float]] = {}
    for check in report.checks if report else []:
        entry = summary.setdefault(check.output, {"min_cosine": 1.0, "max_rel_l2": 0.0})
        entry["min_cosine"] = min(entry["min_cosine"], round(check.min_cosine, 6))
        entry["max_rel_l2"] = max(entry["max_rel_l2"], round(check.max_rel_l2, 6))
    return summary


BUILDERS = {BACKEND: Builder(label="ONNX Runtime int8", precisions=("int8",), build=build_int8,
                             requires="onnxruntime", check_runtime=check_runtime)}
