"""Latency and throughput of one artifact on every runtime, measured in one process on the same inputs.

Eager PyTorch fp32 (the timm model rebuilt as `verify` does) is the reference: every other runner is
reported as a speedup over it and as the max abs difference from its outputs on the very same batch.
The runners are the ones `verify` and `vitdeploy.load` use; each timed call is one synchronous
inference on inputs already where the runtime reads them (`Runner.prepare`: host memory on a CPU,
device memory on a GPU, ONNX Runtime through IO binding), so no copy hides in a time.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.tools.doctor import environment
from vitdeploy.engine import find_engines
from vitdeploy.errors import VitdeployError
from vitdeploy.export import export_artifact
from vitdeploy.tools.hardware import gpu_peak
from vitdeploy.optional import require
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe
from vitdeploy.runners import engine_problem, engine_runner, onnxruntime_problem
from vitdeploy.runners.base import Runner
from vitdeploy.runners.onnxruntime import CPU, CUDA, OnnxRuntimeRunner
from vitdeploy.runners.torch import AUTOCAST, TorchRunner
from vitdeploy.inputs import verification_feeds
from vitdeploy.verify import per_sample_max_rel_l2, per_sample_min_cosine, within


@dataclass(frozen=True)
class BenchOptions:
    batch_sizes: tuple[int, ...] = (1,)
    sizes: tuple[tuple[int, int], ...] = ()  # empty: the artifact's export size
    warmup: int = 5
    iterations: int = 10  # per round
    rounds: int = 3
    threads: int | None = None  # None: torch's default, given to ONNX Runtime and OpenVINO too
    device: str = "cpu"
    autocast: tuple[str, ...] = ()  # "bf16", "fp16"
    compile: bool = False
    ort_optimized: bool = False
    onnxruntime: bool = True  # False: eager and the artifact's engines only (e.g. a torch.compile-only run)
    engines: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Row:
    """One runner at one batch size and input size."""

    backend: str
    precision: str
    batch: int
    height: int
    width: int
    median_ms: float
    p90_ms: float
    images_per_s: float
    speedup: float  # median over rounds of (eager fp32 median / this median) in that round
    speedup_range: tuple[float, float]  # lowest and highest per-round ratio
    max_abs: float  # vs eager fp32 on the same batch, over all outputs
    min_cosine: float  # vs eager fp32, the lowest per-sample cosine of any output (level)
    parity: bool | None  # every output within the artifact's tolerance for `precision` (None: no tolerance)
    tflops: float  # achieved, from the eager model's FLOP count
    peak_fraction: float | None  # of the GPU's peak for `precision` (None on a CPU or an unknown GPU)


@dataclass
class BenchResult:
    artifact: str
    model: str
    device: str  # "cpu" or the GPU's name
    threads: int
    options: BenchOptions
    gflops_per_image: dict[str, float]  # "HxW" -> GFLOP of one image (eager model, counted once)
    peak: dict[str, Any] | None  # the GPU peak table entry used
    load_average: float  # 1-minute load when the run started: other processes on the cores skew CPU timings
    cpu_count: int
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # runner -> why it was not measured
    notes: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # vitdeploy.tools.doctor's facts, asked before timing


def flops_per_image(pyramid: torch.nn.Module, hw: tuple[int, int], device: str) -> float:
    """FLOPs of one image through the eager model (matmuls, convolutions, attention), counted once."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pyramid(torch.zeros(1, 3, *hw, device=device))
    return float(counter.get_total_flops())


def ort_optimized_model(onnx_path: Path, out_dir: Path, device: str,
                        heads_hidden: tuple[int, int]) -> tuple[Path, dict[str, int]]:
    """The graph after onnxruntime.transformers' optimiser (model_type 'vit'), and what it fused."""
    optimizer = require("onnxruntime.transformers.optimizer")
    num_heads, hidden_size = heads_hidden
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its shape-inference failures (Hiera) to stdout
        model = optimizer.optimize_model(str(onnx_path), model_type="vit", num_heads=num_heads,
                                         hidden_size=hidden_size, use_gpu=device == "cuda")
    path = out_dir / "model.ort_optimized.onnx"
    model.save_model_to_file(str(path))
    fused = {op: count for op, count in model.get_fused_operator_statistics().items() if count}
    return path, fused


def _check_options(artifact: Artifact, options: BenchOptions) -> list[tuple[int, int]]:
    spec = artifact.input
    sizes = list(options.sizes) or [spec.opt_hw]
    for height, width in sizes:
        problem = spec.size_error(height, width)
        if problem:
            raise VitdeployError(f"--sizes: {problem}")
    for batch in options.batch_sizes:
        problem = spec.batch.batch_error(batch)
        if problem:
            raise VitdeployError(f"--batch-sizes: {problem}")
    if options.iterations < 1 or options.warmup < 1 or options.rounds < 1:
        raise VitdeployError(f"--warmup {options.warmup} --iterations {options.iterations} --rounds "
                             f"{options.rounds}: expected all >= 1")
    unknown = sorted(set(options.autocast) - set(AUTOCAST))
    if unknown:
        raise VitdeployError(f"--autocast {unknown[0]}: expected one of {', '.join(AUTOCAST)}")
    if options.device not in ("cpu", "cuda"):
        raise VitdeployError(f"--device {options.device}: expected cpu or cuda")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise VitdeployError("--device cuda: torch sees no CUDA GPU (or is a CPU-only build): expected a GPU")
    return sizes


def _time(run: Callable[[], Any], warmup: int, iterations: int) -> tuple[list[float], Any]:
    """Seconds of each timed call and the last result. The warmup runs right before the timed calls:
    interleaving runners call by call would time each one against the previous runtime's threads,
    which keep spinning for a while after a call (ONNX Runtime's pool, OpenMP)."""
    for _ in range(warmup):
        result = run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def _errors(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Output -> (max abs, per-sample min cosine, per-sample max relative L2) of `actual` against `expected`."""
    return {k: (float(np.abs(expected[k].astype(np.float64) - actual[k]).max()),
                per_sample_min_cosine(expected[k], actual[k]), per_sample_max_rel_l2(expected[k], actual[k]))
            for k in expected}


def _runners(artifact: Artifact, options: BenchOptions, reference: TorchRunner, threads: int, workdir: Path,
             result: BenchResult, progress: Progress) -> list[Runner]:
    """Every runner asked for that can run here, the eager reference first; the others go into
    `result.skipped` with the reason."""
    description, device = artifact.description, options.device
    runners: list[Runner] = [reference]
    runners += [TorchRunner(description, device=device, autocast=dtype, pyramid=reference.pyramid)
                for dtype in options.autocast]
    if options.compile:
        runners.append(TorchRunner(description, device=device, compile=True, pyramid=reference.pyramid))
    if options.onnxruntime:
        runners += _onnxruntime_runners(artifact, options, reference, threads, workdir, result, progress)
    if options.engines:
        runners += _engine_runners(artifact, device, threads, result)
    return runners


def _onnxruntime_runners(artifact: Artifact, options: BenchOptions, reference: TorchRunner, threads: int,
                         workdir: Path, result: BenchResult, progress: Progress) -> list[Runner]:
    """ONNX Runtime on `options.device` (and its optimised graph if asked), or none with the reason in `skipped`."""
    description, device = artifact.description, options.device
    problem = onnxruntime_problem(cuda=device == "cuda")
    if problem:
        result.skipped["onnxruntime"] = problem
        return []
    providers = CUDA if device == "cuda" else CPU
    runners: list[Runner] = [OnnxRuntimeRunner(description, artifact.checked_onnx, providers, threads, "onnxruntime")]
    if options.ort_optimized:
        progress.note("optimising the ONNX graph with onnxruntime.transformers (model_type vit)")
        backbone: nn.Module = getattr(reference.pyramid(artifact.input.opt_hw), "backbone")  # each pyramid keeps one
        heads = reference.family.attention_shape(backbone)
        path, fused = ort_optimized_model(artifact.checked_onnx, workdir, device, heads)
        result.notes["ort_optimizer_fused"] = fused
        runners.append(OnnxRuntimeRunner(description, path, providers, threads, "onnxruntime-optimized"))
    return runners


def _engine_runners(artifact: Artifact, device: str, threads: int, result: BenchResult) -> list[Runner]:
    """A runner for every engine in the artifact that runs on `device` here, fp32 first."""
    runners = []
    for engine in find_engines(artifact.directory):
        runs_on = engine.section.device.lower()
        problem = (f"{engine.backend} engines run on {'a GPU' if runs_on == 'cuda' else 'the CPU'} (--device "
                   f"{runs_on})" if runs_on != device else engine_problem(artifact, engine))
        if problem:
            result.skipped[engine.name] = problem
            continue
        runners.append(engine_runner(engine, threads, name=engine.backend))
    return sorted(runners, key=lambda r: (r.precision != "fp32", r.name))


@contextlib.contextmanager
def artifact_or_recipe(target: str, verbose: bool = True) -> Iterator[Artifact]:
    """An existing artifact (directory or .onnx) as is; otherwise `target` is a recipe, exported with its
    defaults and random weights (seed 0) into a temporary directory that is removed afterwards."""
    if Path(target).exists() and not target.endswith(".toml"):
        yield load_artifact(Path(target))
        return
    recipe = load_recipe(target)  # an unknown name is a one-line error listing the recipes
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-export-") as workdir:
        directory = Path(workdir) / recipe.name
        export_artifact(recipe, directory, progress=Progress(total=3, enabled=verbose))
        yield load_artifact(directory)


def run_bench(artifact: Artifact, options: BenchOptions, verbose: bool = True) -> BenchResult:
    """Measure every available runner at every (size, batch) in `options`; progress lines on stderr."""
    sizes = _check_options(artifact, options)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or previous_threads)
    try:
        return _run(artifact, options, sizes, Progress(total=0, enabled=verbose))
    finally:
        torch.set_num_threads(previous_threads)


def _run(artifact: Artifact, options: BenchOptions, sizes: list[tuple[int, int]], progress: Progress) -> BenchResult:
    threads = torch.get_num_threads()
    progress.note(f"building the eager reference {artifact.description.timm_name} and counting its FLOPs")
    reference = TorchRunner(artifact.description, device=options.device)
    device_name = torch.cuda.get_device_name() if options.device == "cuda" else "cpu"
    gflops = {f"{h}x{w}": flops_per_image(reference.pyramid((h, w)), (h, w), options.device) / 1e9 for h, w in sizes}
    result = BenchResult(artifact=artifact.name, model=artifact.description.timm_name, device=device_name,
                         threads=threads, options=options, gflops_per_image=gflops,
                         peak=gpu_peak(device_name) if options.device == "cuda" else None,
                         load_average=round(os.getloadavg()[0], 2), cpu_count=os.cpu_count() or 1,
                         environment=environment().to_dict())
    feeds = verification_feeds(artifact.input, sizes, list(options.batch_sizes), options.seed)
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-") as workdir, contextlib.ExitStack() as active:
        runners = _runners(artifact, options, reference, threads, Path(workdir), result, progress)
        for runner in runners:
            active.enter_context(runner)
        progress.total = len(feeds) * len(runners) * options.rounds
        for feed in feeds:
            _measure_shape(artifact, feed, runners, options, result, progress)
    return result


def _measure_shape(artifact: Artifact, feed: dict[str, np.ndarray], runners: list[Runner], options: BenchOptions,
                   result: BenchResult, progress: Progress) -> None:
    """All runners on one batch, in `options.rounds` rounds; the first (eager fp32) gives the reference
    outputs and times. A round times every runner back to back, so a slow phase of a shared machine
    lands on eager and the others alike; the speedup is the median of per-round ratios."""
    batch = feed[artifact.input.name]
    n, (height, width) = batch.shape[0], artifact.input.hw(batch.shape)
    flops = result.gflops_per_image[f"{height}x{width}"] * 1e9 * n
    prepared = []
    for runner in runners:
        label = f"{runner.name} {runner.precision} batch {n} {height}x{width}"
        try:
            prepared.append((runner, runner.prepare(feed), label))
        except VitdeployError as exc:  # e.g. an engine whose profile excludes this shape
            result.skipped[label] = str(exc)
            progress.total -= options.rounds
    samples: list[list[float]] = [[] for _ in prepared]
    medians: list[list[float]] = [[] for _ in prepared]
    last: list[Any] = [None] * len(prepared)
    for round_number in range(1, options.rounds + 1):
        for i, (_, staged, label) in enumerate(prepared):
            with progress.step(f"{label}, round {round_number}/{options.rounds}: {options.warmup} warmup + "
                               f"{options.iterations} timed calls"):
                seconds, last[i] = _time(staged.run, options.warmup, options.iterations)
            samples[i] += seconds
            medians[i].append(statistics.median(seconds))
    outputs = [staged.fetch(raw) for (_, staged, _), raw in zip(prepared, last)]
    for (runner, _, _), seconds, round_medians, runner_outputs in zip(prepared, samples, medians, outputs):
        errors = _errors(outputs[0], runner_outputs)
        median = statistics.median(seconds)
        ratios = [eager / mine for eager, mine in zip(medians[0], round_medians)]
        tolerance = artifact.description.tolerance.get(runner.precision)
        peak = result.peak["tflops"].get(runner.peak_key) if result.peak and runner.peak_key else None
        result.rows.append(Row(
            backend=runner.name, precision=runner.precision, batch=n, height=height, width=width,
            median_ms=median * 1e3, p90_ms=float(np.percentile(seconds, 90)) * 1e3, images_per_s=n / median,
            speedup=statistics.median(ratios), speedup_range=(min(ratios), max(ratios)),
            max_abs=max(e[0] for e in errors.values()), min_cosine=min(e[1] for e in errors.values()),
            parity=None if tolerance is None else all(within(tolerance, *e) for e in errors.values()),
            tflops=flops / median / 1e12, peak_fraction=(flops / median / 1e12) / peak if peak else None))
