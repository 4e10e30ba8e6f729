"""Latency and throughput of one artifact on every runtime, on the same inputs, against eager PyTorch.

Eager PyTorch fp32 (the timm model rebuilt as `verify` does) is the reference: every other runner is
reported as a speedup over it and as its difference from the reference's outputs on the very same
batch. The runners are the ones `verify` and `vitdeploy.load` use (vitdeploy.runners.candidates);
each timed call is one synchronous inference on inputs already where the runtime reads them
(`Runner.prepare`), so no copy hides in a time.

Isolated (the default, and the only mode whose tables may be published): every runner, the reference
included, runs in a process of its own (vitdeploy.bench_worker), as a user's would. In-process: all
in this process, faster to start, but runtimes then share one process's threads and memory.
Either way rounds alternate over the runners, and the load other processes put on the machine is
measured before and during the timed calls (vitdeploy.machine_load): a loaded run is flagged.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitdeploy import families
from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.bench_worker import Worker, time_calls
from vitdeploy.errors import VitdeployError
from vitdeploy.export import export_artifact
from vitdeploy.inputs import verification_feeds
from vitdeploy.machine_load import DEFAULT_MAX_LOAD, LoadMeter, load_average
from vitdeploy.models import ModelForSize, reference_pyramids
from vitdeploy.optional import is_installed, missing
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe
from vitdeploy.runners import onnxruntime_problem
from vitdeploy.runners.base import Outputs, Prepared, Runner
from vitdeploy.runners.candidates import COMPILE_PRECISIONS, RunnerSpec, engine_specs
from vitdeploy.runners.onnxruntime import optimized_onnx
from vitdeploy.runners.torch import AUTOCAST
from vitdeploy.tools.doctor import environment
from vitdeploy.tools.hardware import gpu_peak
from vitdeploy.parity import per_sample_max_rel_l2, per_sample_min_cosine, within

PEERS_CPU = (("compile", "fp32"), ("compile", "bf16"), ("torchao", "int8"))  # --peers on a CPU
PEERS_CUDA = (("compile", "fp32"), ("compile", "bf16"), ("compile", "fp16"))
LOAD_SAMPLE_S = 2.0  # how long the machine is watched before the run


@dataclass(frozen=True)
class BenchOptions:
    batch_sizes: tuple[int, ...] = (1,)
    sizes: tuple[tuple[int, int], ...] = ()  # empty: the artifact's export size
    warmup: int = 5
    iterations: int = 10  # per round
    rounds: int = 3
    threads: int | None = None  # None: torch's default, given to every runtime
    device: str = "cpu"
    autocast: tuple[str, ...] = ()  # eager under autocast: "bf16", "fp16"
    compile: tuple[str, ...] = ()  # torch.compile (freezing) at "fp32", or with autocast "bf16", "fp16"
    torchao: bool = False  # torchao's int8 for x86 (CPU)
    ort_optimized: bool = False
    onnxruntime: bool = True  # False: eager and the artifact's engines only (e.g. a torch.compile-only run)
    engines: bool = True
    precisions: tuple[str, ...] = ()  # engines (and ONNX Runtime's fp32 model.onnx) of these precisions; (): all
    seed: int = 0
    isolated: bool = True  # each runner in a process of its own
    max_load: float = DEFAULT_MAX_LOAD  # CPUs other processes may keep busy, before or during, on average

    def with_peers(self) -> BenchOptions:
        """These options plus the torch peers a user would pick on the device (--peers)."""
        peers = PEERS_CUDA if self.device == "cuda" else PEERS_CPU
        compile = tuple(dict.fromkeys([*self.compile, *(precision for kind, precision in peers if kind == "compile")]))
        return BenchOptions(**{**self.__dict__, "compile": compile,
                               "torchao": self.torchao or any(kind == "torchao" for kind, _ in peers)})


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
    other_load: float | None = None  # CPUs other processes kept busy during this row's timed calls (None: unknown)


@dataclass
class BenchResult:
    artifact: str
    model: str
    device: str  # "cpu" or the GPU's name
    threads: int
    options: BenchOptions
    gflops_per_image: dict[str, float]  # "HxW" -> GFLOP of one image (eager model, counted once)
    peak: dict[str, Any] | None  # the GPU peak table entry used
    load_average: float | None  # 1-minute load when the run started (bench's own processes included)
    cpu_count: int
    other_load_before: float | None = None  # CPUs other processes kept busy just before the run (None: unknown)
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # runner -> why it was not measured
    notes: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # vitdeploy.tools.doctor's facts, asked before timing

    @property
    def other_load_during(self) -> float | None:
        """The highest load other processes put on the machine while any row was timed."""
        loads = [row.other_load for row in self.rows if row.other_load is not None]
        return max(loads) if loads else None

    def load_problem(self) -> str | None:
        """Why these timings do not show what a user would get on a quiet machine; None if they do."""
        before, during, limit = self.other_load_before, self.other_load_during, self.options.max_load
        if before is None:
            return "the machine's load could not be measured (it is read from Linux's /proc)"
        if before > limit or (during or 0.0) > limit:
            return (f"other processes kept {before:.2f} CPUs busy before the run and up to {during or 0.0:.2f} "
                    f"during it (--max-load {limit:g})")
        return None


def flops_per_image(pyramid: torch.nn.Module, hw: tuple[int, int], device: str) -> float:
    """FLOPs of one image through the eager model (matmuls, convolutions, attention), counted once."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pyramid(torch.zeros(1, 3, *hw, device=device))
    return float(counter.get_total_flops())


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
    unknown = sorted(set(options.autocast) - set(AUTOCAST)) + sorted(set(options.compile) - set(COMPILE_PRECISIONS))
    if unknown:
        raise VitdeployError(f"--autocast/--compile {unknown[0]}: expected one of {', '.join(COMPILE_PRECISIONS)}")
    if options.device not in ("cpu", "cuda"):
        raise VitdeployError(f"--device {options.device}: expected cpu or cuda")
    if options.device == "cuda" and not torch.cuda.is_available():
        raise VitdeployError("--device cuda: torch sees no CUDA GPU (or is a CPU-only build): expected a GPU")
    if options.max_load < 0:
        raise VitdeployError(f"--max-load {options.max_load}: expected CPUs >= 0")
    return sizes


def _errors(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Output -> (max abs, per-sample min cosine, per-sample max relative L2) of `actual` against `expected`."""
    return {k: (float(np.abs(expected[k].astype(np.float64) - actual[k]).max()),
                per_sample_min_cosine(expected[k], actual[k]), per_sample_max_rel_l2(expected[k], actual[k]))
            for k in expected}


def _specs(artifact: Artifact, options: BenchOptions, workdir: Path, result: BenchResult,
           progress: Progress) -> list[RunnerSpec]:
    """A spec for every runner asked for that can run here, the eager reference first; the others go into
    `result.skipped` with the reason."""
    device = options.device
    specs = [RunnerSpec("torch", device)]
    specs += [RunnerSpec("torch", device, autocast=dtype) for dtype in options.autocast]
    specs += [RunnerSpec("torch", device, autocast=None if precision == "fp32" else precision, compile=True)
              for precision in options.compile]
    if options.torchao:
        if device != "cpu":
            result.skipped["torchao int8"] = "torchao's x86 int8 (X86InductorQuantizer) runs on the CPU (--device cpu)"
        elif not is_installed("torchao"):
            result.skipped["torchao int8"] = str(missing("torchao"))
        else:
            specs.append(RunnerSpec("torch", device, int8=True))
    if options.onnxruntime and (not options.precisions or "fp32" in options.precisions):
        problem = onnxruntime_problem(cuda=device == "cuda")
        if problem:
            result.skipped["onnxruntime"] = problem
        else:
            specs.append(RunnerSpec("onnx", device, name="onnxruntime"))
            if options.ort_optimized:
                progress.note("optimising the ONNX graph with onnxruntime.transformers (model_type vit)")
                path, result.notes["ort_optimizer_fused"] = optimized_onnx(artifact, workdir, device == "cuda")
                specs.append(RunnerSpec("onnx", device, path=path, name="onnxruntime-optimized"))
    if options.engines:
        engines, skipped = engine_specs(artifact, device, options.precisions)
        specs += engines
        result.skipped.update(skipped)
    return specs


class InProcess:
    """A runner timed in the bench process: the same calls a Worker makes in its own process."""

    pid = None

    def __init__(self, runner: Runner):
        self.runner = runner
        self.name, self.precision, self.peak_key = runner.name, runner.precision, runner.peak_key
        self._prepared: list[Prepared] = []
        self._last: list[Any] = []
        runner.activate()

    def prepare(self, feed: dict[str, Any]) -> int:
        self._prepared.append(self.runner.prepare(feed))
        self._last.append(None)
        return len(self._prepared) - 1

    def time(self, index: int, warmup: int, iterations: int) -> list[float]:
        seconds, self._last[index] = time_calls(self._prepared[index].run, warmup, iterations)
        return seconds

    def fetch(self, index: int) -> Outputs:
        return self._prepared[index].fetch(self._last[index])

    def close(self) -> None:
        self.runner.deactivate()


Timed = InProcess | Worker


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
    meter = LoadMeter()
    progress.note(f"watching the machine's load for {LOAD_SAMPLE_S:g}s")
    before, average = meter.sample(LOAD_SAMPLE_S), load_average()
    progress.note(f"building the eager reference {artifact.description.timm_name} and counting its FLOPs")
    eager = reference_pyramids(artifact.description, families.get(artifact.description.family),
                               device=options.device)
    device_name = torch.cuda.get_device_name() if options.device == "cuda" else "cpu"
    gflops = {f"{h}x{w}": flops_per_image(eager((h, w)), (h, w), options.device) / 1e9 for h, w in sizes}
    result = BenchResult(artifact=artifact.name, model=artifact.description.timm_name, device=device_name,
                         threads=threads, options=options, gflops_per_image=gflops,
                         peak=gpu_peak(device_name) if options.device == "cuda" else None, load_average=average,
                         cpu_count=meter.cpus, other_load_before=before, environment=environment().to_dict())
    reference: ModelForSize | None = None if options.isolated else eager  # isolated: each worker builds its own
    del eager
    feeds = verification_feeds(artifact.input, sizes, list(options.batch_sizes), options.seed)
    target = str(artifact.directory or artifact.onnx_path)
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-") as workdir, contextlib.ExitStack() as active:
        timed: list[Timed] = []
        specs = _specs(artifact, options, Path(workdir), result, progress)
        progress.total = len(specs) * (1 + len(feeds) * (1 + options.rounds))  # start; per batch: stage, rounds
        for spec in specs:
            label = spec.name or ("torchao int8" if spec.int8 else f"torch {spec.kind}")
            with progress.step(f"starting {label}" + (" in a process of its own" if options.isolated else "")):
                shared = reference if spec.kind == "torch" else None
                try:
                    runner = (Worker(target, spec, threads) if options.isolated
                              else InProcess(spec.create(artifact, threads, shared)))
                except VitdeployError as exc:
                    if not timed:
                        raise  # the eager reference
                    result.skipped[label] = str(exc)
                    progress.total -= len(feeds) * (1 + options.rounds)
                    continue
            active.callback(runner.close)
            timed.append(runner)
        meter = LoadMeter([runner.pid for runner in timed if runner.pid])
        for feed in feeds:
            _measure_shape(artifact, feed, timed, options, result, meter, progress)
    return result


def _measure_shape(artifact: Artifact, feed: dict[str, np.ndarray], timed: list[Timed], options: BenchOptions,
                   result: BenchResult, meter: LoadMeter, progress: Progress) -> None:
    """All runners on one batch, in `options.rounds` rounds; the first (eager fp32) gives the reference
    outputs and times. A round times every runner back to back, each round starting one runner later, so a
    slow phase of a shared machine lands on eager and the others alike; the speedup is the median of
    per-round ratios."""
    batch = feed[artifact.input.name]
    n, (height, width) = batch.shape[0], artifact.input.hw(batch.shape)
    flops = result.gflops_per_image[f"{height}x{width}"] * 1e9 * n
    prepared = []
    for runner in timed:
        label = f"{runner.name} {runner.precision} batch {n} {height}x{width}"
        with progress.step(f"{label}: staging the batch" + (" and compiling" if "compile" in runner.name
                                                           or runner.name == "torchao" else "")):
            try:
                prepared.append((runner, runner.prepare(feed), label))
            except VitdeployError as exc:  # e.g. an engine whose profile excludes this shape
                if not prepared:
                    raise
                result.skipped[label] = str(exc)
                progress.total -= options.rounds
    samples: list[list[float]] = [[] for _ in prepared]
    medians: list[list[float]] = [[] for _ in prepared]
    loads: list[list[float]] = [[] for _ in prepared]
    for round_index in range(options.rounds):
        for i in [(round_index + k) % len(prepared) for k in range(len(prepared))]:
            runner, index, label = prepared[i]
            with progress.step(f"{label}, round {round_index + 1}/{options.rounds}: {options.warmup} warmup + "
                               f"{options.iterations} timed calls"):
                meter.start()
                seconds = runner.time(index, options.warmup, options.iterations)
                load = meter.stop()
            samples[i] += seconds
            medians[i].append(statistics.median(seconds))
            if load is not None:
                loads[i].append(load)
    outputs = [runner.fetch(index) for runner, index, _ in prepared]
    for (runner, _, _), seconds, round_medians, runner_outputs, runner_loads in zip(prepared, samples, medians,
                                                                                    outputs, loads):
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
            tflops=flops / median / 1e12, peak_fraction=(flops / median / 1e12) / peak if peak else None,
            other_load=round(statistics.mean(runner_loads), 3) if runner_loads else None))
