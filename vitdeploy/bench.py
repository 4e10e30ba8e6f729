"""Latency and throughput of one artifact on every backend, measured in one process on the same inputs.

Eager PyTorch fp32 (the timm model rebuilt as `verify` does) is the reference: every other backend is
reported as a speedup over it and as the max abs difference from its outputs on the very same batch.
Each timed call is one synchronous inference on inputs already where the backend reads them (host
memory on a CPU, device memory on a GPU, ONNX Runtime through IO binding), so no copy hides in a time.
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

from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import image_hw, pixels_in_graph, size_error
from vitdeploy.models import reference_models
from vitdeploy.preprocess import normalise
from vitdeploy.progress import Progress
from vitdeploy.pyramid import pyramid_module
from vitdeploy.recipes import load_recipe
from vitdeploy.verify import verification_feeds

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
REFERENCE = "torch"


@dataclass(frozen=True)
class BenchOptions:
    batch_sizes: tuple[int, ...] = (1,)
    sizes: tuple[tuple[int, int], ...] = ()  # empty: the artifact's export size
    warmup: int = 5
    iterations: int = 10  # per round
    rounds: int = 3
    threads: int | None = None  # None: torch's default, given to ONNX Runtime too
    device: str = "cpu"
    autocast: tuple[str, ...] = ()  # "bf16", "fp16"
    compile: bool = False
    ort_optimized: bool = False
    tensorrt: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Row:
    """One backend at one batch size and input size."""

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
    parity: bool | None  # max_abs within the artifact's tolerance for `precision` (None: no tolerance)
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
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why it was not measured
    notes: dict[str, Any] = field(default_factory=dict)


class Candidate:
    """A backend under test. `bind` stages a batch and returns one synchronous inference to time."""

    name: str
    precision: str
    peak_key: str  # which GPU peak applies: fp32, tf32, fp16 or bf16

    def bind(self, batch: np.ndarray) -> Callable[[], Any]:
        raise NotImplementedError

    def to_numpy(self, result: Any) -> list[np.ndarray]:
        """The outputs of one call on host, float32, in pyramid order."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the runtime's memory."""


class TorchCandidate(Candidate):
    """The eager timm pyramid; optionally under autocast or torch.compile."""

    def __init__(self, pyramids: Callable[[tuple[int, int]], torch.nn.Module], input_spec: dict[str, Any],
                 device: str, autocast: str | None = None, compiled: bool = False):
        self.name = "torch-compile" if compiled else ("torch-autocast" if autocast else REFERENCE)
        self.precision = autocast or "fp32"
        tf32 = device == "cuda" and torch.backends.cuda.matmul.allow_tf32
        self.peak_key = autocast or ("tf32" if tf32 else "fp32")
        self._pyramids, self._input_spec, self._device, self._autocast = pyramids, input_spec, device, autocast
        self._compiled: dict[tuple[int, int], Any] = {} if compiled else None

    def _module(self, hw: tuple[int, int]) -> Any:
        if self._compiled is None:
            return self._pyramids(hw)
        if hw not in self._compiled:
            self._compiled[hw] = torch.compile(self._pyramids(hw))
        return self._compiled[hw]

    def bind(self, batch: np.ndarray) -> Callable[[], Any]:
        if pixels_in_graph(self._input_spec):  # host normalisation, untimed (well under 1% of a call)
            batch = normalise(batch, self._input_spec)
        image = torch.from_numpy(batch).to(self._device)
        module = self._module((batch.shape[2], batch.shape[3]))
        cuda = self._device == "cuda"
        autocast = (torch.autocast(self._device, dtype=AUTOCAST[self._autocast]) if self._autocast
                    else contextlib.nullcontext())

        def run() -> Any:
            with torch.inference_mode(), autocast:
                outputs = module(image)
            if cuda:
                torch.cuda.synchronize()
            return outputs

        return run

    def to_numpy(self, result: Any) -> list[np.ndarray]:
        return [output.float().cpu().numpy() for output in result]


class OrtCandidate(Candidate):
    """An ONNX Runtime session; on CUDA the input and outputs stay on the GPU through IO binding."""

    def __init__(self, name: str, onnx_path: Path, output_names: list[str], device: str, threads: int):
        from vitdeploy.runners.onnxruntime import create_session

        self.name, self.precision = name, "fp32"
        self.peak_key = "tf32" if device == "cuda" else "fp32"  # the CUDA provider's use_tf32 defaults to on
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        self._session = create_session(onnx_path, providers, threads)
        self._input = self._session.get_inputs()[0].name
        self._outputs, self._cuda = output_names, device == "cuda"

    def bind(self, batch: np.ndarray) -> Callable[[], Any]:
        if not self._cuda:
            feed = {self._input: batch}
            return lambda: self._session.run(self._outputs, feed)
        import onnxruntime as ort

        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self._input, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0))
        for name in self._outputs:
            binding.bind_output(name, "cuda", 0)

        def run() -> Any:
            self._session.run_with_iobinding(binding)  # returns once the CUDA stream is synchronised
            return binding

        return run

    def to_numpy(self, result: Any) -> list[np.ndarray]:
        return list(result) if not self._cuda else result.copy_outputs_to_cpu()

    def close(self) -> None:
        del self._session


class TrtCandidate(Candidate):
    """A vitdeploy engine. Parity goes through the checked runner; timing feeds CUDA tensors directly."""

    def __init__(self, engine_path: Path):
        from vitdeploy.runners.tensorrt import TensorRTRunner

        self._runner = TensorRTRunner(engine_path)
        self.name, self.precision = self._runner.sidecar["engine"]["backend"], self._runner.sidecar["engine"][
            "precision"]
        self.peak_key = "tf32" if self.precision == "fp32" else self.precision
        self._runner.activate()

    def bind(self, batch: np.ndarray) -> Callable[[], Any]:
        name = self._runner.sidecar["input"]["name"]
        feed = {name: torch.from_numpy(batch).cuda()}
        torch.cuda.synchronize()  # the copy runs on torch's stream, the engine on polygraphy's
        # infer checks the profile (VitdeployError outside it) and, given device tensors, skips host copies
        return lambda: self._runner.infer(feed, copy_outputs_to_host=False)

    def to_numpy(self, result: Any) -> list[np.ndarray]:
        return [result[name].float().cpu().numpy() for name in self._runner.output_names]

    def close(self) -> None:
        self._runner.deactivate()


def reference_pyramids(artifact: Artifact, device: str) -> Callable[[tuple[int, int]], torch.nn.Module]:
    """hw -> the eager timm pyramid at that size on `device`, built as `verify` builds its reference."""
    meta = artifact.meta
    model_for_size = reference_models(meta)
    built: dict[tuple[int, int], torch.nn.Module] = {}

    def pyramid(hw: tuple[int, int]) -> torch.nn.Module:
        if hw not in built:
            built[hw] = pyramid_module(model_for_size(hw), meta["outputs"], meta.get("pyramid")).to(device)
        return built[hw]

    return pyramid


def flops_per_image(pyramid: torch.nn.Module, hw: tuple[int, int], device: str) -> float:
    """FLOPs of one image through the eager model (matmuls, convolutions, attention), counted once."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        pyramid(torch.zeros(1, 3, *hw, device=device))
    return float(counter.get_total_flops())


def attention_shape(backbone: torch.nn.Module) -> tuple[int, int]:
    """(num_heads, hidden_size) of a plain ViT; (0, 0), i.e. unknown, for a model whose stages differ."""
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(backbone, VisionTransformer):
        return backbone.blocks[0].attn.num_heads, backbone.embed_dim
    return 0, 0


def ort_optimized_model(onnx_path: Path, out_dir: Path, device: str,
                        heads_hidden: tuple[int, int]) -> tuple[Path, dict[str, int]]:
    """The graph after onnxruntime.transformers' optimiser (model_type 'vit'), and what it fused."""
    from onnxruntime.transformers import optimizer

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
    sizes = list(options.sizes) or [tuple(spec["opt_hw"])]
    for height, width in sizes:
        problem = size_error(spec, height, width)
        if problem:
            raise VitdeployError(f"--sizes: {problem}")
    low, high = spec["batch"]["min"], spec["batch"]["max"]
    for batch in options.batch_sizes:
        if not low <= batch <= high:
            raise VitdeployError(f"--batch-sizes: batch {batch} is outside the artifact's range {low}..{high}")
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
    interleaving backends call by call would time each one against the previous runtime's threads,
    which keep spinning for a while after a call (ONNX Runtime's pool, OpenMP)."""
    for _ in range(warmup):
        result = run()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return times, result


def _max_abs(expected: list[np.ndarray], actual: list[np.ndarray]) -> float:
    return max(float(np.abs(e.astype(np.float64) - a).max()) for e, a in zip(expected, actual))


def _candidates(artifact: Artifact, options: BenchOptions, pyramids: Callable, threads: int, workdir: Path,
                result: BenchResult, progress: Progress) -> list[Candidate]:
    """Every backend asked for that can run here; the others go into `result.skipped` with the reason."""
    from vitdeploy.api import onnxruntime_problem

    device = options.device
    candidates: list[Candidate] = [TorchCandidate(pyramids, artifact.input, device)]
    candidates += [TorchCandidate(pyramids, artifact.input, device, autocast=dtype) for dtype in options.autocast]
    if options.compile:
        candidates.append(TorchCandidate(pyramids, artifact.input, device, compiled=True))
    ort_problem = onnxruntime_problem(device)
    if ort_problem:
        result.skipped["onnxruntime"] = ort_problem
    else:
        candidates.append(OrtCandidate("onnxruntime", artifact.onnx_path, artifact.output_names, device, threads))
        if options.ort_optimized:
            progress.note("optimising the ONNX graph with onnxruntime.transformers (model_type vit)")
            backbone = pyramids(tuple(artifact.input["opt_hw"])).backbone
            path, fused = ort_optimized_model(artifact.onnx_path, workdir, device, attention_shape(backbone))
            result.notes["ort_optimizer_fused"] = fused
            candidates.append(OrtCandidate("onnxruntime-optimized", path, artifact.output_names, device, threads))
    if options.tensorrt:
        candidates += _engines(artifact, device, result)
    return candidates


def _engines(artifact: Artifact, device: str, result: BenchResult) -> list[Candidate]:
    """Every engine in the artifact that loads here, fp32 first."""
    from vitdeploy.api import engine_paths, engine_problem

    engines = []
    for path in engine_paths(artifact):
        problem = "engines run on a GPU only (--device cuda)" if device != "cuda" else engine_problem(artifact, path)
        if problem:
            result.skipped[path.name] = problem
        else:
            engines.append(TrtCandidate(path))
    return engines


def _peak(device: str) -> dict[str, Any] | None:
    from vitdeploy.bench_report import gpu_peak

    return gpu_peak(torch.cuda.get_device_name()) if device == "cuda" else None


@contextlib.contextmanager
def artifact_or_recipe(target: str, verbose: bool = True) -> Iterator[Artifact]:
    """An existing artifact (directory or .onnx) as is; otherwise `target` is a recipe, exported with its
    defaults and random weights (seed 0) into a temporary directory that is removed afterwards."""
    if Path(target).exists() and not target.endswith(".toml"):
        yield load_artifact(Path(target))
        return
    from vitdeploy.export import export_artifact

    recipe = load_recipe(target)  # an unknown name is a one-line error listing the recipes
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-export-") as workdir:
        directory = Path(workdir) / recipe.name
        export_artifact(recipe, directory, progress=Progress(total=3, enabled=verbose))
        yield load_artifact(directory)


def run_bench(artifact: Artifact, options: BenchOptions, verbose: bool = True) -> BenchResult:
    """Measure every available backend at every (size, batch) in `options`; progress lines on stderr."""
    sizes = _check_options(artifact, options)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(options.threads or previous_threads)
    try:
        return _run(artifact, options, sizes, Progress(total=0, enabled=verbose))
    finally:
        torch.set_num_threads(previous_threads)


def _run(artifact: Artifact, options: BenchOptions, sizes: list[tuple[int, int]], progress: Progress) -> BenchResult:
    threads = torch.get_num_threads()
    progress.note(f"building the eager reference {artifact.meta['timm_name']} and counting its FLOPs")
    pyramids = reference_pyramids(artifact, options.device)
    device_name = torch.cuda.get_device_name() if options.device == "cuda" else "cpu"
    gflops = {f"{h}x{w}": flops_per_image(pyramids((h, w)), (h, w), options.device) / 1e9 for h, w in sizes}
    result = BenchResult(artifact=artifact.name, model=artifact.meta["timm_name"], device=device_name,
                         threads=threads, options=options, gflops_per_image=gflops, peak=_peak(options.device),
                         load_average=round(os.getloadavg()[0], 2), cpu_count=os.cpu_count())
    feeds = verification_feeds(artifact.input, sizes, list(options.batch_sizes), options.seed)
    with tempfile.TemporaryDirectory(prefix="vitdeploy-bench-") as workdir:
        candidates = _candidates(artifact, options, pyramids, threads, Path(workdir), result, progress)
        progress.total = len(feeds) * len(candidates) * options.rounds
        try:
            for feed in feeds:
                batch = feed[artifact.input["name"]]
                _measure_shape(artifact, batch, candidates, options, result, progress)
        finally:
            for candidate in candidates:
                candidate.close()
    return result


def _measure_shape(artifact: Artifact, batch: np.ndarray, candidates: list[Candidate], options: BenchOptions,
                   result: BenchResult, progress: Progress) -> None:
    """All candidates on one batch, in `options.rounds` rounds; the first (eager fp32) gives the
    reference outputs and times. A round times every candidate back to back, so a slow phase of a
    shared machine lands on eager and the others alike; the speedup is the median of per-round ratios."""
    n, (height, width) = batch.shape[0], image_hw(artifact.input, batch.shape)
    flops = result.gflops_per_image[f"{height}x{width}"] * 1e9 * n
    bound: list[tuple[Candidate, Callable[[], Any], str]] = []
    for candidate in candidates:
        label = f"{candidate.name} {candidate.precision} batch {n} {height}x{width}"
        try:
            bound.append((candidate, candidate.bind(batch), label))
        except VitdeployError as exc:  # e.g. an engine whose profile excludes this shape
            result.skipped[label] = str(exc)
            progress.total -= options.rounds
    samples: list[list[float]] = [[] for _ in bound]
    medians: list[list[float]] = [[] for _ in bound]
    last: list[Any] = [None] * len(bound)
    for round_number in range(1, options.rounds + 1):
        for i, (_, run, label) in enumerate(bound):
            with progress.step(f"{label}, round {round_number}/{options.rounds}: {options.warmup} warmup + "
                               f"{options.iterations} timed calls"):
                seconds, last[i] = _time(run, options.warmup, options.iterations)
            samples[i] += seconds
            medians[i].append(statistics.median(seconds))
    outputs = [candidate.to_numpy(result_of_last) for (candidate, _, _), result_of_last in zip(bound, last)]
    for (candidate, _, _), seconds, round_medians, candidate_outputs in zip(bound, samples, medians, outputs):
        max_abs = _max_abs(outputs[0], candidate_outputs)
        median = statistics.median(seconds)
        ratios = [eager / mine for eager, mine in zip(medians[0], round_medians)]
        tolerance = artifact.meta["tolerance"].get(candidate.precision)
        peak = result.peak["tflops"].get(candidate.peak_key) if result.peak else None
        result.rows.append(Row(
            backend=candidate.name, precision=candidate.precision, batch=n, height=height, width=width,
            median_ms=median * 1e3, p90_ms=float(np.percentile(seconds, 90)) * 1e3, images_per_s=n / median,
            speedup=statistics.median(ratios), speedup_range=(min(ratios), max(ratios)), max_abs=max_abs,
            parity=None if tolerance is None else max_abs <= tolerance["max_abs"],
            tflops=flops / median / 1e12, peak_fraction=(flops / median / 1e12) / peak if peak else None))
