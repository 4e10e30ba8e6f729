"""`vitdeploy verify`: parity of an artifact (or one of its engines) against eager PyTorch (vitdeploy.parity),
each report written beside what it judged with this machine's environment."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vitdeploy.artifact import REPORT_FILE, Artifact
from vitdeploy.atomic import write_json_atomic
from vitdeploy.calibration import list_images, photo_feeds, recorded_photos
from vitdeploy.description import Description
from vitdeploy.tools.doctor import environment
from vitdeploy.engine import Engine
from vitdeploy.engine.precision import DEFAULT_FP32_OPS, bf16_on_cpu, reduced_precision_onnx
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import verification_feeds
from vitdeploy.parity import VerifyReport, compare, verification_batches, verification_sizes
from vitdeploy.runners import create_runner, engine_runner
from vitdeploy.runners.base import Runner
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner


def compare_runners(description: Description, source: Path, candidate: Runner, label: str,
                    batch_sizes: list[int] | None = None, sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                    checkpoint: Path | None = None, feeds: list[dict[str, np.ndarray]] | None = None) -> VerifyReport:
    """`vitdeploy.parity.compare`, its report carrying this machine's environment (vitdeploy.tools.doctor)."""
    report = compare(description, source, candidate, label, batch_sizes, sizes, seed, checkpoint, feeds)
    return replace(report, environment=environment().to_dict())


def verify_onnx(artifact: Artifact, cuda: bool = False, batch_sizes: list[int] | None = None,
                sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                checkpoint: Path | None = None) -> VerifyReport:
    """ONNX Runtime (CPU, or the CUDA provider) vs eager PyTorch; the report is also written into the artifact."""
    runner = create_runner(artifact, "onnxruntime_cuda" if cuda else "onnxruntime_cpu")
    label = f"onnxruntime ({', '.join(runner.providers)})"
    report = compare_runners(artifact.description, artifact.directory or artifact.onnx_path, runner, label, batch_sizes,
                             sizes, seed, checkpoint)
    if artifact.directory is not None:
        write_json_atomic(artifact.directory / REPORT_FILE, report.to_dict())
    return report


def verify_engine(engine: Engine, batch_sizes: list[int] | None = None, sizes: list[tuple[int, int]] | None = None,
                  seed: int = 0, checkpoint: Path | None = None, images: Path | None = None) -> VerifyReport:
    """An engine (TensorRT / TensorRT-RTX: needs a GPU; OpenVINO, ONNX Runtime int8: the CPU) vs eager PyTorch
    at its precision's tolerance: over its input range on seeded inputs, or for int8 on photos not used for
    calibration (`images`, else the held-out photos recorded at quantisation). The report is written beside
    the engine as ENGINE.verify.json."""
    runner = engine_runner(engine)
    description, section = engine.description, engine.section
    feeds = None
    if engine.precision == "int8":
        photos = list_images(images) if images else recorded_photos((section.quantization or {}).get("held_out", []))
        if not photos:
            raise VitdeployError(f"{engine.name} records no held-out photos: pass --images FOLDER with photos "
                                 "not used for calibration (int8 is judged on real images)")
        feeds = photo_feeds(description.input, photos)
    report = compare_runners(description, engine.path, runner, f"{section.backend} {section.backend_version} engine",
                             batch_sizes, sizes, seed, checkpoint, feeds)
    write_json_atomic(engine.path.with_name(engine.name + ".verify.json"), report.to_dict())
    return report


def verify_reduced_precision(artifact: Artifact, precision: str, batch_sizes: list[int] | None = None,
                             sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                             checkpoint: Path | None = None) -> tuple[VerifyReport, dict[str, Any]]:
    """The fp16 or bf16 graph that the TensorRT builders parse (vitdeploy.engine.precision), run by ONNX Runtime
    on the CPU, vs eager PyTorch at the recipe's fp16/bf16 tolerance: an fp16 failure found on any machine before
    an engine is built. bf16 runs as float32 arithmetic on values rounded to bf16 (the CPU provider has few bf16
    kernels). Returns the report (also written as verify_report.<precision>.json) and the range record (the
    nodes kept fp32)."""
    if precision not in ("fp16", "bf16"):
        raise VitdeployError(f"--precision {precision}: expected fp16 or bf16 (fp32 is the default check)")
    spec = artifact.input
    feeds = verification_feeds(spec, sizes or verification_sizes(spec), verification_batches(spec, batch_sizes), seed)
    half, kept_fp32 = reduced_precision_onnx(artifact.onnx_path, precision, DEFAULT_FP32_OPS,
                                              verification_feeds(spec, [spec.opt_hw], [1], seed))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"model.{precision}.onnx"
        onnx.save(bf16_on_cpu(half) if precision == "bf16" else half, str(path), save_as_external_data=True,
                  location=f"{path.name}.data")
        runner = OnnxRuntimeRunner(artifact.description, path, name=f"onnxruntime-{precision}", precision=precision)
        report = compare_runners(artifact.description, artifact.directory or artifact.onnx_path, runner,
                                 f"onnxruntime (CPU) running the {precision} graph", seed=seed,
                                 checkpoint=checkpoint, feeds=feeds)
    if artifact.directory is not None:
        write_json_atomic(artifact.directory / f"verify_report.{precision}.json",
                          {**report.to_dict(), "kept_fp32": kept_fp32})
    return report, kept_fp32
