"""Parity against eager PyTorch, per output, with polygraphy's Comparator: the comparison and its report.

polygraphy runs the runners and measures the errors; vitdeploy judges max absolute error against the recipe
tolerance (scaled by the output's magnitude above 1, `scaled_tolerance`) and adds what a pyramid consumer also
needs to know: per-sample cosine similarity, relative L2 error and non-finite counts. Used by
`vitdeploy verify` (vitdeploy.verify), export's own check, and the int8 builder's held-out gate
(vitdeploy.engine.onnxruntime), which is why it imports nothing of the engines or runtimes' registry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from polygraphy.comparator import Comparator, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from vitdeploy.description import Description, InputSpec, Tolerance
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import verification_feeds
from vitdeploy.runners.base import Runner
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
    tol_max_abs: float | None  # the recipe's, scaled by the output's magnitude above 1 (scaled_tolerance)
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


def scaled_tolerance(tolerance: Tolerance, expected: np.ndarray) -> Tolerance:
    """The absolute bound scaled by the output's largest magnitude where that exceeds 1: float arithmetic errs
    relative to the numbers it adds, so outputs in the thousands (random weights through a deep CNN with
    un-normalising BatchNorm, CoaT's parallel blocks) cannot meet 1e-4 absolute however right the graph is."""
    peak = float(np.abs(expected).max()) if expected.size and np.isfinite(expected).all() else 1.0
    if tolerance.max_abs is None or peak <= 1.0:
        return tolerance
    return replace(tolerance, max_abs=tolerance.max_abs * peak)


def compare(description: Description, source: Path, candidate: Runner, label: str,
                    batch_sizes: list[int] | None = None, sizes: list[tuple[int, int]] | None = None, seed: int = 0,
                    checkpoint: Path | None = None, feeds: list[dict[str, np.ndarray]] | None = None) -> VerifyReport:
    """Run eager PyTorch and `candidate` (which runs what `description` describes, found at `source`: the report
    names it) on the same inputs and judge every output at the candidate's precision. The inputs are seeded
    image-like batches over the description's sizes and batches, or `feeds` (real photos). The report leaves
    `environment` empty: vitdeploy.verify's reports add this machine's."""
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
            scaled = scaled_tolerance(tolerance, expected)
            passed = bool(same_shape and stats is not None and nonfinite == 0
                          and within(scaled, float(stats.max_absdiff), cosine, rel_l2))
            checks.append(OutputCheck(
                input_shape=list(feed[spec.name].shape), output=output, shape=list(actual.shape),
                expected_shape=list(expected.shape),
                # a failed comparison is falsy in polygraphy, yet its figures are the ones to report
                max_abs=float(stats.max_absdiff) if stats is not None else float("inf"),
                max_rel=float(stats.max_reldiff) if stats is not None else float("inf"),
                min_cosine=cosine, max_rel_l2=rel_l2, nonfinite=nonfinite, tol_max_abs=scaled.max_abs,
                tol_min_cosine=tolerance.min_cosine, tol_max_rel_l2=tolerance.max_rel, passed=passed))
    return VerifyReport(artifact=str(source), candidate=label, precision=candidate.precision, seed=seed, checks=checks,
                        reference=reference.family.reference_label())
