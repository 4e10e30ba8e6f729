"""Parity of an artifact (or one of its engines) against eager PyTorch, per output, with polygraphy's Comparator.

polygraphy runs the runners and judges max absolute error against the recipe tolerance; vitdeploy adds
what a pyramid consumer also needs to know: per-sample cosine similarity and non-finite counts.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import timm
import torch
from polygraphy.comparator import Comparator, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from vitdeploy.artifact import REPORT_FILE, Artifact
from vitdeploy.atomic import write_json_atomic
from vitdeploy.calibration import list_images, photo_feeds, recorded_photos
from vitdeploy.description import Description, InputSpec, Tolerance
from vitdeploy.tools.doctor import environment
from vitdeploy.engine import Engine
from vitdeploy.engine.precision import DEFAULT_FP32_OPS, bf16_on_cpu, reduced_precision_onnx
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import verification_feeds
from vitdeploy.runners import create_runner, engine_runner
from vitdeploy.runners.base import Runner
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.runners.torch import TorchRunner

REFERENCE = "torch"
DEFAULT_BATCH_SIZES = (1, 2, 4)  # those within the artifact's batch range; asked-for sizes must all be in it


@dataclass(frozen=True)
class OutputCheck:
    """One output at one input shape."""

    input_shape: list[int]
    output: str
    shape: list[int]
    expected_shape: list[int]
    max_abs: float
    max_rel: float  # elementwise, polygraphy's
    min_cosine: float
    max_rel_l2: float  # per sample ||actual - expected|| / ||expected||, the worst sample
    nonfinite: int
    tol_max_abs: float | None
    tol_min_cosine: float
    tol_max_rel_l2: float | None
    passed: bool


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON: a non-finite figure is written as null (and its check failed)."""
    return None if isinstance(value, float) and not np.isfinite(value) else value


@dataclass(frozen=True)
class VerifyReport:
    artifact: str
    candidate: str
    precision: str
    seed: int
    checks: list[OutputCheck]
    environment: dict[str, Any] = field(default_factory=dict)  # vitdeploy.tools.doctor's facts for this machine
    reference: str = f"eager torch {torch.__version__} / timm {timm.__version__}"

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "reference": self.reference,
                "candidate": self.candidate, "precision": self.precision, "seed": self.seed,
                "passed": self.passed, "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "checks": [{k: _json_number(v) for k, v in asdict(check).items()} for check in self.checks],
                "environment": self.environment}

    def table(self) -> str:
        header = f"{'input':<15} {'output':<10} {'shape':<18} {'max_abs':>9} {'max_rel':>9} {'cosine':>10} " \
                 f"{'rel_l2':>9} {'nonfinite':>9} {'tol_abs':>8}  result"
        rows = [header]
        for c in self.checks:
            tol_abs = "-" if c.tol_max_abs is None else f"{c.tol_max_abs:.0e}"
            rows.append(f"{'x'.join(map(str, c.input_shape)):<15} {c.output:<10} {'x'.join(map(str, c.shape)):<18} "
                        f"{c.max_abs:>9.2e} {c.max_rel:>9.2e} {c.min_cosine:>10.7f} {c.max_rel_l2:>9.2e} "
                        f"{c.nonfinite:>9d} {tol_abs:>8}  {'pass' if c.passed else 'FAIL'}")
        return "\n".join(rows)


def verification_batches(spec: InputSpec, batch_sizes: list[int] | None) -> list[int]:
    """The batch sizes to check: the asked-for ones, each within the artifact's batch range, or by
    default those of DEFAULT_BATCH_SIZES that are (always at least the minimum)."""
    low, high = spec.batch.min, spec.batch.max
    if batch_sizes is None:
        return [b for b in DEFAULT_BATCH_SIZES if spec.batch.batch_error(b) is None] or [low]
    if not batch_sizes:
        raise VitdeployError(f"no batch sizes given: expected sizes within the artifact's batch range {low}..{high}")
    for batch in batch_sizes:
        problem = spec.batch.batch_error(batch)
        if problem:
            raise VitdeployError(f"{problem}: expected batch sizes within it")
    return list(dict.fromkeys(batch_sizes))


def verification_sizes(spec: InputSpec) -> list[tuple[int, int]]:
    """The export size; for a dynamic artifact also min, max and both non-square corners of the range."""
    if not spec.dynamic:
        return [spec.opt_hw]
    (min_h, min_w), (max_h, max_w) = spec.min_hw, spec.max_hw
    return list(dict.fromkeys([spec.opt_hw, (min_h, min_w), (max_h, max_w), (min_h, max_w), (max_h, min_w)]))


def per_sample_min_cosine(expected: np.ndarray, actual: np.ndarray) -> float:
    """The lowest cosine similarity between matching samples; NaN when either holds a NaN or infinity
    (no similarity can be claimed), 1.0 for two all-zero samples."""
    a = expected.reshape(expected.shape[0], -1).astype(np.float64)
    b = actual.reshape(actual.shape[0], -1).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    return float(cosine.min())


def per_sample_max_rel_l2(expected: np.ndarray, actual: np.ndarray) -> float:
    """The worst sample's ||actual - expected|| / ||expected||; NaN for non-finite values, inf for an all-zero
    expected sample that actual does not match."""
    a = expected.reshape(expected.shape[0], -1).astype(np.float64)
    b = actual.reshape(actual.shape[0], -1).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    diff, norm = np.linalg.norm(b - a, axis=1), np.linalg.norm(a, axis=1)
    return float(np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.where(diff > 0, np.inf, 0.0)).max())


def within(tolerance: Tolerance, max_abs: float, cosine: float, rel_l2: float) -> bool:
    """Whether one output's errors pass `tolerance` (a non-finite figure never does)."""
    return bool(cosine >= tolerance.min_cosine and (tolerance.max_abs is None or max_abs <= tolerance.max_abs)
                and (tolerance.max_rel is None or rel_l2 <= tolerance.max_rel))


def compare_runners(description: Description, source: Path, candidate: Runner, label: str,
                    batch_sizes: list[int] | None = None, sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                    checkpoint: Path | None = None, feeds: list[dict[str, np.ndarray]] | None = None) -> VerifyReport:
    """Run eager PyTorch and `candidate` (which runs what `description` describes, found at `source`: the report
    names it) on the same inputs and judge every output at the candidate's precision. The inputs are seeded
    image-like batches over the description's sizes and batches, or `feeds` (real photos)."""
    spec = description.input
    if feeds is None:
        feeds = verification_feeds(spec, sizes or verification_sizes(spec), verification_batches(spec, batch_sizes),
                                   seed)
    reference = TorchRunner(description, checkpoint, name=REFERENCE)
    tolerance = description.tolerance[candidate.precision]
    atol = float("inf") if tolerance.max_abs is None else tolerance.max_abs
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # the report below says per output what polygraphy logs as [E]
        results = Comparator.run([reference, candidate], data_loader=feeds)
        accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(
            atol=atol, rtol=0.0, check_error_stat="max"))
    iterations = accuracy[0][(REFERENCE, candidate.name)]  # one AccuracyResult per compare function
    checks = []
    for feed, expected_it, actual_it, compared in zip(feeds, results[REFERENCE], results[candidate.name],
                                                      iterations):
        for output in description.output_names:
            expected, actual = expected_it[output], actual_it[output]
            same_shape = expected.shape == actual.shape
            stats = compared.get(output)
            cosine = per_sample_min_cosine(expected, actual) if same_shape else -1.0
            rel_l2 = per_sample_max_rel_l2(expected, actual) if same_shape else float("inf")
            nonfinite = int((~np.isfinite(actual)).sum())
            passed = bool(same_shape and stats is not None and bool(stats) and nonfinite == 0
                          and within(tolerance, float(stats.max_absdiff), cosine, rel_l2))
            checks.append(OutputCheck(
                input_shape=list(feed[spec.name].shape), output=output, shape=list(actual.shape),
                expected_shape=list(expected.shape),
                max_abs=float(stats.max_absdiff) if stats else float("inf"),
                max_rel=float(stats.max_reldiff) if stats else float("inf"),
                min_cosine=cosine, max_rel_l2=rel_l2, nonfinite=nonfinite, tol_max_abs=tolerance.max_abs,
                tol_min_cosine=tolerance.min_cosine, tol_max_rel_l2=tolerance.max_rel, passed=passed))
    return VerifyReport(artifact=str(source), candidate=label, precision=candidate.precision, seed=seed, checks=checks,
                        environment=environment().to_dict(), reference=reference.family.reference_label())


def verify_onnx(artifact: Artifact, cuda: bool = False, batch_sizes: list[int] | None = None,
                sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                checkpoint: Path | None = None) -> VerifyReport:
    """ONNX Runtime (CPU, or the CUDA provider) vs eager PyTorch; the report is also written into the artifact."""
    runner = create_runner(artifact, "onnxruntime-cuda" if cuda else "onnxruntime-cpu")
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
