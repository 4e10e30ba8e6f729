"""Served throughput and latency: Ray Serve at each replica count against direct runtime calls, in rounds.

One local cluster holds one application per replica count (route prefixes `/r1`, `/r2`, ... on one
proxy); the direct runtime is a `vitdeploy.Model` in this process with every CPU's thread. Every request
is the same uint8 image, preprocessed on both sides as `Model.infer` does. A round times, back to back:
direct calls of one image (what a caller of `Model.infer` sees), direct calls of `max_batch` images
(one process's best throughput), then each application under `concurrency` clients; so a slow phase of
a shared machine lands on all of them. Served latencies are per request as the client sees them (HTTP,
encoding, queueing and batching included); throughput is images over the wall time of a round's
requests; the ratio is img/s over direct one-image calls of the same round (median and range, as
`vitdeploy bench` reports speedups). The clients run on the same CPUs as the replicas.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitdeploy.api import Model
from vitdeploy.artifact import load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.progress import Progress
from vitdeploy.runners import select
from vitdeploy.serve import app
from vitdeploy.serve.batching import serving_batch
from vitdeploy.serve.client import Client
from vitdeploy.serve.cluster import local_cpus, ray_cluster


@dataclass(frozen=True)
class ServeBenchOptions:
    replicas: tuple[int, ...] = (1, 2)
    concurrency: int = 16  # client threads sending requests
    requests: int = 128  # per mode and round
    rounds: int = 3
    warmup: int = 16  # untimed requests per mode before the first round
    size: tuple[int, int] | None = None  # the image's size [default: the artifact's export size]
    max_batch: int | None = None  # [default: 8, or the artifact's batch max]
    batch_wait_ms: float = 5.0
    backend: str = "auto"
    port: int = 8000


@dataclass(frozen=True)
class ServeRow:
    mode: str
    replicas: int | None
    threads: str
    images_per_s: float  # median over rounds
    p50_ms: float  # over every timed request of every round
    p99_ms: float
    ratio: float  # median over rounds of img/s / direct one-image img/s
    ratio_range: tuple[float, float]


@dataclass
class ServeBenchResult:
    artifact: str
    backend: str
    image_hw: tuple[int, int]
    cpus: int
    load_average: float
    options: ServeBenchOptions
    max_batch: int
    rows: list[ServeRow] = field(default_factory=list)


def _timed(calls: int, call: Callable[[], object], concurrency: int, images_per_call: int) -> tuple[float, list[float]]:
    """(images/s over the wall time, per-call latencies in seconds) of `calls` calls on `concurrency` threads."""
    def one(_: int) -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    start = time.perf_counter()
    if concurrency == 1:
        latencies = [one(i) for i in range(calls)]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(calls)))
    return calls * images_per_call / (time.perf_counter() - start), latencies


def run_serve_bench(artifact_dir: Path, options: ServeBenchOptions = ServeBenchOptions(),
                    verbose: bool = True) -> ServeBenchResult:
    artifact = load_artifact(artifact_dir)
    runtime, _ = select(artifact, options.backend)
    spec = artifact.input
    hw = options.size or spec.opt_hw
    max_batch = serving_batch(spec.batch, options.max_batch, "--max-batch")
    problem = spec.size_error(*hw) if spec.dynamic else None
    if problem:
        raise VitdeployError(f"--size {hw[0]}x{hw[1]}: {problem}")
    if min(options.replicas, default=0) < 1 or min(options.requests, options.rounds, options.concurrency) < 1:
        raise VitdeployError("--replicas, --requests, --rounds and --concurrency: expected positive numbers")
    app.check_port("127.0.0.1", options.port)
    cpus = os.cpu_count() or 1
    progress = Progress(total=len(options.replicas) + options.rounds * (2 + len(options.replicas)), enabled=verbose)
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    batch = np.stack([image] * max_batch)
    result = ServeBenchResult(artifact=artifact.name, backend=runtime.name, image_hw=hw, cpus=cpus,
                              load_average=round(os.getloadavg()[0], 2), options=options, max_batch=max_batch)
    with ray_cluster(None, local_cpus(sum(options.replicas))), Model(artifact, options.backend, threads=cpus) as model:
        app.start("127.0.0.1", options.port)
        clients = {}
        for count in options.replicas:
            with progress.step(f"deploying {count} replica{'s' * (count > 1)} at /r{count}"):
                app.deploy(app.ServeOptions(artifact=str(Path(artifact_dir).resolve()), backend=options.backend,
                                            replicas=count, max_batch=max_batch, batch_wait_ms=options.batch_wait_ms,
                                            threads=max(1, cpus // count)), name=f"r{count}", route_prefix=f"/r{count}")
            clients[count] = Client(f"http://127.0.0.1:{options.port}/r{count}")
        modes: dict[str, tuple[Callable[[], object], int, int]] = {  # (call, concurrency, images per call)
            "direct, 1 per call": (lambda: model.infer(image), 1, 1),
            f"direct, {max_batch} per call": (lambda: model.infer(batch), 1, max_batch),
            **{f"served {count}": (partial(client.send, image), options.concurrency, 1)
               for count, client in clients.items()}}
        for call, concurrency, _ in modes.values():
            _timed(options.warmup, call, concurrency, 1)
        throughput: dict[str, list[float]] = {mode: [] for mode in modes}
        latencies: dict[str, list[float]] = {mode: [] for mode in modes}
        for round_number in range(1, options.rounds + 1):
            for mode, (call, concurrency, per_call) in modes.items():
                calls = max(1, options.requests // per_call)
                with progress.step(f"round {round_number}/{options.rounds}: {mode}, {calls} calls"):
                    rate, seconds = _timed(calls, call, concurrency, per_call)
                throughput[mode].append(rate)
                latencies[mode] += seconds
    direct = throughput["direct, 1 per call"]
    for mode, rates in throughput.items():
        ratios = [rate / base for rate, base in zip(rates, direct)]
        replicas = int(mode.split()[1]) if mode.startswith("served") else None
        result.rows.append(ServeRow(
            mode="served" if replicas else mode, replicas=replicas,
            threads="+".join([str(max(1, cpus // replicas))] * replicas) if replicas else str(cpus),
            images_per_s=statistics.median(rates), p50_ms=float(np.percentile(latencies[mode], 50)) * 1e3,
            p99_ms=float(np.percentile(latencies[mode], 99)) * 1e3, ratio=statistics.median(ratios),
            ratio_range=(min(ratios), max(ratios))))
    return result


def format_serve_table(result: ServeBenchResult) -> str:
    options = result.options
    lines = [f"{result.artifact}: {result.image_hw[0]}x{result.image_hw[1]} uint8 images, {result.backend}, "
             f"{result.cpus} CPUs (load average {result.load_average} at start); {options.rounds} rounds of "
             f"{options.requests} images per mode; served: {options.concurrency} concurrent clients, batches of up "
             f"to {result.max_batch} within {options.batch_wait_ms:g} ms",
             f"{'mode':<20} {'replicas':>8} {'threads':>7} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'vs direct':>9} {'(rounds)':>11}"]
    for row in result.rows:
        lines.append(f"{row.mode:<20} {row.replicas or '-':>8} {row.threads:>7} {row.images_per_s:>8.1f} "
                     f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f} {row.ratio:>8.2f}x "
                     f"{f'{row.ratio_range[0]:.2f}-{row.ratio_range[1]:.2f}':>11}")
    return "\n".join(lines)
