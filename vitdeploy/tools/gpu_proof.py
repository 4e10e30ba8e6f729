"""The GPU proof: one short run on a lent GPU machine that records what vitdeploy does there.

It is made for a machine that has torch but none of vitdeploy's optional runtimes, and for one command
of at most 10 minutes (docs/gpu_proof/README.md). It exports each recipe with random weights, tries a
TensorRT-RTX build and load (recording the success or the exact refusal), times eager fp32 and autocast
bf16/fp16 (and ONNX Runtime's CUDA provider when its wheel is there), runs `pytest -m gpu`, builds and
times an AOTInductor package for the GPU (the engine for data-center GPUs that TensorRT-RTX refuses, where
full TensorRT is not installed), and last times torch.compile, the step that costs most (its compile time). Each step is budgeted: one that does
not fit the time left is skipped with that reason, and gpu_proof.json and gpu_proof.md are rewritten
after every step, so a run stopped from outside still leaves what it measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import timm
import torch

from vitdeploy import engine
from vitdeploy.artifact import load_artifact
from vitdeploy.atomic import write_bytes_atomic, write_json_atomic
from vitdeploy.bench import BenchOptions, run_bench
from vitdeploy.tools.bench_report import to_dict
from vitdeploy.tools.doctor import environment
from vitdeploy.engine import Engine
from vitdeploy.engine.tensorrt import auto_flavour, rtx_unsupported
from vitdeploy.errors import VitdeployError
from vitdeploy.export import ExportOptions, export_artifact
from vitdeploy.tools.gpu_proof_report import render_markdown
from vitdeploy.tools.hardware import (compute_capability, cuda_driver_version, driver_release, format_capability,
                                      no_gpu_reason)
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe
from vitdeploy.runners import engine_problem

REPO = Path(__file__).resolve().parents[2]  # tests/ and pyproject.toml are here in a source checkout
TIMING = {"cuda": (10, 40, 5), "cpu": (1, 3, 1)}  # warmup, iterations, rounds: seconds on an H200, a dry run on a CPU
# Seconds each step is expected to take on an H200 machine (16 CPU cores), per recipe where it runs per recipe:
# docs/gpu_proof/README.md gives the measurements on this project's CPU they are extrapolated from.
ESTIMATE_S = {"export": 30, "tensorrt_rtx": 30, "baselines": 40, "pytest": 90, "aoti": 120, "compile": 150}
PYTEST_CAP_S = 240
RESERVE_S = 10  # kept for writing the results
RTX_ITSELF = """
import sys, tensorrt_rtx as trt
runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
engine = runtime.deserialize_cuda_engine(open(sys.argv[1], "rb").read())
if engine is None:
    sys.exit("deserialize_cuda_engine returned None")
if engine.create_execution_context() is None:
    sys.exit("create_execution_context returned None")
print("deserialised, execution context created")
"""


@dataclass(frozen=True)
class ProofOptions:
    output_dir: Path
    recipes: tuple[str, ...] = ("vit_base", "hiera_base")
    batch_sizes: tuple[int, ...] = (1, 32)
    device: str = "cuda"
    pytest: bool = True
    budget_s: float = 540.0


def check_device(device: str) -> None:
    """A proof on "cuda" needs a GPU torch can use; say what was found instead."""
    if device == "cuda" and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise VitdeployError(f"gpu-proof needs a CUDA GPU that torch can use: torch {torch.__version__} is {build} "
                             f"and sees {torch.cuda.device_count()} GPUs ({no_gpu_reason()}); run it on a GPU "
                             "machine, or pass --device cpu for a dry run")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, VitdeployError) else f"{type(exc).__name__}: {text}"


def machine() -> dict[str, Any]:
    capability = compute_capability()
    return {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "compute_capability": None if capability is None else format_capability(capability),
            "driver": driver_release(), "cuda_driver": cuda_driver_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "timm": timm.__version__, "onnx": onnx.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}


class Proof:
    """One run: its record (`data`, written as JSON and markdown after every step) and its time budget."""

    def __init__(self, options: ProofOptions, command: str, progress: Progress):
        self.options, self.progress, self.started = options, progress, time.monotonic()
        self.data: dict[str, Any] = {
            "format": 1, "command": command, "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finished": False, "device": options.device, "budget_s": options.budget_s, "elapsed_s": 0.0,
            "recipes": list(options.recipes), "batch_sizes": list(options.batch_sizes), "machine": machine(),
            "environment": environment().to_dict(), "steps": [], "bench": {}, "tensorrt_rtx": {}, "pytest": None}

    def left(self) -> float:
        return self.options.budget_s - (time.monotonic() - self.started)

    def step(self, name: str, estimate: float, run: Callable[[], str]) -> bool:
        """Run one step if its estimate fits the time left; record ok (with what `run` says), skipped or failed
        (a step's failure is recorded and the proof goes on: it is a record, not a test)."""
        left = self.left() - RESERVE_S
        record = {"step": name, "status": "skipped", "seconds": 0.0, "detail": ""}
        self.data["steps"].append(record)
        if left < estimate:
            record["detail"] = f"budget: {max(left, 0):.0f} s left, this step takes about {estimate:.0f} s here"
        else:
            record.update(status="running", detail="the run was stopped during this step")  # until it ends
            self.write()
            self.progress.note(f"gpu-proof: {name} ({left:.0f} s of the budget left)")
            started = time.monotonic()
            try:
                record.update(status="ok", detail=run())
            except Exception as exc:  # noqa: BLE001 - torch, TensorRT and pytest failures are results here
                record.update(status="failed", detail=_first_line(exc))
            record["seconds"] = round(time.monotonic() - started, 1)
        self.write()
        return record["status"] == "ok"

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.options.output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.options.output_dir / "gpu_proof.json", self.data)
        write_bytes_atomic(self.options.output_dir / "gpu_proof.md", render_markdown(self.data).encode())


def _bench(proof: Proof, artifact_dir: Path, group: str, **options: Any) -> str:
    warmup, iterations, rounds = TIMING[proof.options.device]
    bench_options = BenchOptions(batch_sizes=proof.options.batch_sizes, device=proof.options.device, warmup=warmup,
                                 iterations=iterations, rounds=rounds, **options)
    result = to_dict(run_bench(load_artifact(artifact_dir), bench_options, verbose=proof.progress.enabled))
    result.pop("environment")  # the proof records it once
    proof.data["bench"].setdefault(artifact_dir.name, {})[group] = result
    return f"{len(result['rows'])} rows" + (f", skipped: {', '.join(result['skipped'])}" if result["skipped"] else "")


def _tensorrt_rtx(proof: Proof, artifact_dir: Path) -> str:
    """`--backend auto` here, then a TensorRT-RTX engine for this GPU and a portable one, each built and checked
    for loading as vitdeploy does it; where vitdeploy refuses the engine, TensorRT-RTX itself is asked too."""
    capability = compute_capability()
    attempt: dict[str, Any] = proof.data["tensorrt_rtx"].setdefault(artifact_dir.name, {})

    def outcome(run: Callable[[], str]) -> dict[str, Any]:
        try:
            return {"ok": True, "text": run()}
        except VitdeployError as exc:
            return {"ok": False, "text": str(exc)}

    attempt["auto"] = outcome(lambda: "chooses " + auto_flavour())
    attempt["support_matrix"] = {"ok": capability is not None and rtx_unsupported(capability) is None,
                                 "text": "no GPU here" if capability is None else rtx_unsupported(capability) or
                                 f"compute capability {format_capability(capability)} is on it"}
    progress = Progress(total=3, enabled=proof.progress.enabled)
    attempt["build_target_gpu"] = outcome(lambda: engine.build(artifact_dir, "tensorrt_rtx", target_gpu=True,
                                                               progress=progress).name)
    if not attempt["build_target_gpu"]["ok"]:
        attempt["build_portable"] = outcome(lambda: engine.build(artifact_dir, "tensorrt_rtx", progress=progress).name)
    built = attempt.get("build_portable", attempt["build_target_gpu"])
    if not built["ok"]:
        return f"not built: {built['text']}"
    path = artifact_dir / built["text"]
    problem = engine_problem(load_artifact(artifact_dir), Engine.at(path))
    attempt["load"] = {"ok": problem is None,
                       "text": problem or "loads: its description, file sizes, runtime and GPU checks pass "
                                          "(bench hashes and times it)"}
    if problem:
        attempt["tensorrt_rtx_itself"] = _rtx_itself(path)
    return attempt["load"]["text"]


def _aoti(proof: Proof, artifact_dir: Path) -> str:
    """An AOTInductor fp32 package compiled for the proof's device, then timed beside eager fp32."""
    progress = Progress(total=3, enabled=proof.progress.enabled)
    built = engine.build(artifact_dir, "aoti", "fp32", device=proof.options.device, progress=progress)
    timed = _bench(proof, artifact_dir, "aoti", onnxruntime=False, precisions=("fp32",))
    return f"{built.name} compiled in {built.section.build_seconds:.0f} s; {timed}"


def _rtx_itself(engine_path: Path) -> dict[str, Any]:
    """TensorRT-RTX's own answer for an engine vitdeploy refused (in a child process: it may abort)."""
    try:
        run = subprocess.run([sys.executable, "-c", RTX_ITSELF, str(engine_path)], capture_output=True, text=True,
                             timeout=120)
    except subprocess.TimeoutExpired:
        return {"ok": False, "text": "no answer within 120 s"}
    lines = (run.stdout + run.stderr).strip().splitlines()
    return {"ok": run.returncode == 0, "text": f"exit {run.returncode}: " + " / ".join(lines[-3:])}


def _pytest(proof: Proof) -> str:
    """`python -m pytest -m gpu` in the source checkout, capped by the time left; its summary line recorded."""
    if not (REPO / "tests").is_dir():
        raise VitdeployError(f"no tests/ in {REPO}: run gpu-proof from a source checkout")
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    cap = max(min(PYTEST_CAP_S, proof.left() - RESERVE_S), 1)
    record = {"command": " ".join(["python", *command[1:]]), "cap_s": round(cap), "returncode": None}
    proof.data["pytest"] = record
    try:
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=cap)
        lines, record["returncode"] = run.stdout.strip().splitlines(), run.returncode
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or "").strip().splitlines()
        lines.append(f"timed out after {cap:.0f} s")
    summary = lines[-1] if lines else "(no output)"
    record.update(summary=summary, tail=lines[-40:])
    if record["returncode"] not in (0, 5):  # 5: nothing collected
        raise VitdeployError(f"pytest -m gpu: {summary}")
    return summary


def run_proof(options: ProofOptions, command: str, verbose: bool = True) -> dict[str, Any]:
    """The whole proof (see the module docstring); returns its record, also written to `options.output_dir`."""
    check_device(options.device)
    recipes = [load_recipe(name) for name in options.recipes]  # an unknown name fails before anything runs
    proof = Proof(options, command, Progress(total=0, enabled=verbose))
    proof.write()
    with tempfile.TemporaryDirectory(prefix="vitdeploy-gpu-proof-") as workdir:
        export_progress = Progress(total=3, enabled=verbose)
        exported = []
        for recipe in recipes:
            directory = Path(workdir) / recipe.name
            if proof.step(f"export {recipe.name}", ESTIMATE_S["export"],
                          lambda: export_artifact(recipe, directory, ExportOptions(), export_progress).name):
                exported.append(directory)
        for directory in exported:
            proof.step(f"tensorrt_rtx {directory.name}", ESTIMATE_S["tensorrt_rtx"],
                       lambda: _tensorrt_rtx(proof, directory))
        for directory in exported:
            proof.step(f"baselines {directory.name}", ESTIMATE_S["baselines"],
                       lambda: _bench(proof, directory, "baselines", autocast=("bf16", "fp16")))
        if options.pytest:
            proof.step("pytest -m gpu", ESTIMATE_S["pytest"], lambda: _pytest(proof))
        else:
            proof.data["steps"].append({"step": "pytest -m gpu", "status": "skipped", "seconds": 0.0,
                                        "detail": "not asked for (--skip-pytest)"})
        for directory in exported:
            proof.step(f"aoti {directory.name}", ESTIMATE_S["aoti"], lambda: _aoti(proof, directory))
        for directory in exported:
            proof.step(f"torch.compile {directory.name}", ESTIMATE_S["compile"],
                       lambda: _bench(proof, directory, "compile", compile=("fp32",), onnxruntime=False, engines=False))
    proof.data.update(finished=True, finished_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    proof.write()
    return proof.data
