"""The runtimes `vitdeploy.load`, `verify` and `bench` run an artifact on, each with why it cannot run here.

A runtime either runs the artifact's ONNX file (ONNX Runtime) or the engines its builder of the same name
built into the artifact (vitdeploy.backends names both). `auto` tries them by `auto_rank`: the GPU runtimes
TensorRT, TensorRT-RTX, ONNX Runtime CUDA and AOTInductor packages built for a GPU first, then, on the CPU,
OpenVINO, AOTInductor packages built for the CPU and ONNX Runtime: the order of the isolated measurement
on a quiet CPU (docs/benchmark.md, `auto`'s order: at fp32 on vit_base, batch 1 / 8, OpenVINO 136 / 1014
ms, an AOTInductor package 143 / 1034 ms, ONNX Runtime 150 / 1176 ms; hiera_base in the same order).
Adding a runtime is one runner module plus its engine builder (vitdeploy.engine), its entry here and its
name in vitdeploy.backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vitdeploy.artifact import Artifact
from vitdeploy.backends import check_backend
from vitdeploy.description import Description
from vitdeploy.engine import Engine, build_command, builder, check_engine, find_engines
from vitdeploy.errors import VitdeployError
from vitdeploy.tools.hardware import gpu_present
from vitdeploy.optional import is_installed, missing
from vitdeploy.runners.base import Runner
from vitdeploy.runners.onnxruntime import CPU, CUDA, OnnxRuntimeRunner, available_providers
from vitdeploy.runners.openvino import OpenVINORunner
from vitdeploy.runners.tensorrt import TensorRTRunner

ENGINE_PRECISIONS = ("fp32", "fp16")  # what runs when no precision is asked for, in this order: bf16 and int8
# change the numbers beyond fp16's, so they run only when asked for


@dataclass(frozen=True)
class Runtime:
    name: str
    auto_rank: int
    engine_backends: tuple[str, ...]  # builders whose engines it runs (ONNX Runtime: the int8 graphs)
    run_engine: Callable[[Engine, int | None], Runner]  # (engine, threads)
    onnx_problem: Callable[[], str | None] | None = None  # ONNX Runtime, which also runs model.onnx: why not here
    run_onnx: Callable[[Description, Path, int | None], Runner] | None = None  # ... and its runner for an ONNX graph
    # of the artifact (model.onnx, or bench's optimised form of it)
    engine_device: str | None = None  # the device its engines were built for ("cpu", "cuda"); None: any

    def create(self, artifact: Artifact, engine: Engine | None, threads: int | None = None) -> Runner:
        """A runner for `engine`, or for the artifact's model.onnx where `choose` gave no engine (ONNX Runtime)."""
        if engine is not None:
            return self.run_engine(engine, threads)
        if self.run_onnx is None:
            raise VitdeployError(f"{self.name} runs engines only: build one with `vitdeploy build`")
        return self.run_onnx(artifact.description, artifact.checked_onnx, threads)

    def engines(self, artifact: Artifact, precision: str | None = None,
                found: Sequence[Engine] | None = None) -> list[Engine]:
        """The artifact's engines (`found` there already, else looked for) for this runtime, `precision` only if
        given, in order of preference."""
        precisions = (precision,) if precision else ENGINE_PRECISIONS
        found = find_engines(artifact.directory) if found is None else found
        mine = [engine for engine in found if self.runs(engine) and engine.precision in precisions]
        return sorted(mine, key=lambda engine: (precisions.index(engine.precision), engine.name))

    def runs(self, engine: Engine) -> bool:
        """`engine` is one of this runtime's: its builder's, for its device."""
        return engine.backend in self.engine_backends and (
            self.engine_device is None or engine.section.device.lower() == self.engine_device)

    def choose(self, artifact: Artifact, precision: str | None = None,
               found: Sequence[Engine] | None = None) -> tuple[Engine | None, str | None]:
        """(the engine to use or None, why this runtime cannot run the artifact here or None); `found`: the
        artifact's engines, if already looked for. ONNX Runtime runs model.onnx at fp32 (the default) and the
        int8 graph when int8 is asked for."""
        if self.onnx_problem is not None:
            problem = self.onnx_problem()
            if problem or precision in (None, "fp32"):
                return None, problem
        found = find_engines(artifact.directory) if found is None else found
        engines = self.engines(artifact, precision, found)
        if not engines:
            what = f"no {precision or ' or '.join(ENGINE_PRECISIONS)} {self.name} engine"
            others = sorted({engine.precision for engine in found if self.runs(engine)})
            if others:
                return None, f"{what} in the artifact (it has {', '.join(others)}: ask for it with precision)"
            maker = builder(self.engine_backends[0])
            wanted = precision or ENGINE_PRECISIONS[0]
            if wanted not in maker.precisions:
                return None, f"{what}: {maker.label} builds {', '.join(maker.precisions)} only"
            return None, f"{what} in the artifact (make one with `{build_command(self.engine_backends[0], wanted)}`)"
        reasons = []
        for engine in engines:
            problem = engine_problem(artifact, engine)
            if problem is None:
                return engine, None
            reasons.append(f"{engine.name}: {problem}")
        return None, "; ".join(reasons)


def engine_problem(artifact: Artifact, engine: Engine) -> str | None:
    """Why `engine` cannot run the artifact here (description, files and their sizes, runtime, device); None
    if it can. Its bytes are hashed when a runner loads it: a corrupt engine is an error then, not a reason
    to fall back to another runtime."""
    try:
        description = check_engine(engine, contents=False)
    except VitdeployError as exc:
        return str(exc)
    if artifact.description.export and description.export != artifact.description.export:
        return f"{engine.name} was built from another model.onnx: rebuild it with `vitdeploy build`"
    return None


def onnxruntime_problem(cuda: bool) -> str | None:
    """Why ONNX Runtime (with its CUDA provider, if `cuda`) cannot run here; None if it can."""
    if not is_installed("onnxruntime"):
        return str(missing("onnxruntime"))
    if not cuda:
        return None
    if "CUDAExecutionProvider" not in available_providers():
        return "this onnxruntime has no CUDA provider (pip install 'vitdeploy[ort-gpu]')"
    return None if gpu_present() else "no CUDA GPU found"


def _onnxruntime(name: str, auto_rank: int, cuda: bool) -> Runtime:
    """ONNX Runtime on the artifact's model.onnx, or on an int8 graph (its own description, its precision)."""
    providers = CUDA if cuda else CPU

    def run_engine(engine: Engine, threads: int | None) -> Runner:
        description = check_engine(engine)
        return OnnxRuntimeRunner(description, engine.path, providers, threads, name, precision=engine.precision)

    return Runtime(name, auto_rank, ("onnxruntime",), run_engine, onnx_problem=lambda: onnxruntime_problem(cuda),
                   run_onnx=lambda description, path, threads: OnnxRuntimeRunner(description, path, providers, threads,
                                                                                 name))


def _aoti(engine: Engine, threads: int | None) -> Runner:
    from vitdeploy.runners.aoti import AOTIRunner  # imports torch, this runtime's only dependency

    return AOTIRunner(engine, threads, name="aoti")


def _tensorrt(flavour: str, auto_rank: int) -> Runtime:
    """TensorRT or TensorRT-RTX (vitdeploy.engine.tensorrt_flavour), on the engines of its own builder only."""
    return Runtime(flavour, auto_rank, (flavour,), lambda engine, threads: TensorRTRunner(engine, name=flavour))


RUNTIMES = {runtime.name: runtime for runtime in (
    _tensorrt("tensorrt", 0),
    _tensorrt("tensorrt_rtx", 1),
    _onnxruntime("onnxruntime_cuda", 2, cuda=True),
    Runtime("aoti_cuda", 3, ("aoti",), _aoti, engine_device="cuda"),
    Runtime("openvino", 4, ("openvino",), lambda engine, threads: OpenVINORunner(engine, threads, name="openvino")),
    Runtime("aoti_cpu", 5, ("aoti",), _aoti, engine_device="cpu"),
    _onnxruntime("onnxruntime_cpu", 6, cuda=False),
)}
AUTO = tuple(sorted(RUNTIMES, key=lambda name: RUNTIMES[name].auto_rank))
ALIASES = {"auto": AUTO, "onnxruntime": ("onnxruntime_cuda", "onnxruntime_cpu"), "aoti": ("aoti_cuda", "aoti_cpu")}
BACKENDS = (*ALIASES, *AUTO)  # what `vitdeploy.load(backend=...)` and the runtime commands' --backend take


def select(artifact: Artifact, backend: str = "auto", precision: str | None = None) -> tuple[Runtime, Engine | None]:
    """The runtime (and engine) to run `artifact` on: the first of `backend`'s candidates that runs here."""
    backend = check_backend(backend, BACKENDS, "runtime")
    candidates = ALIASES.get(backend, (backend,))
    found = find_engines(artifact.directory)  # each engine's description is read once, by the first who asks
    problems = {}
    for name in candidates:
        engine, problems[name] = RUNTIMES[name].choose(artifact, precision, found)
        if problems[name] is None:
            return RUNTIMES[name], engine
    available = [name for name in AUTO if (problems[name] if name in problems
                                          else RUNTIMES[name].choose(artifact, precision, found)[1]) is None]
    why = "; ".join(f"{name}: {problems[name]}" for name in candidates)
    raise VitdeployError(f"backend {backend!r} is not available for {artifact.name} ({why}): "
                         f"available: {', '.join(available) or 'none'}")


def create_runner(artifact: Artifact, backend: str = "auto", precision: str | None = None,
                  threads: int | None = None) -> Runner:
    """A runner for `artifact` on `backend` (see `select`), not yet activated."""
    runtime, engine = select(artifact, backend, precision)
    return runtime.create(artifact, engine, threads)


def engine_runner(engine: Engine, threads: int | None = None, name: str | None = None) -> Runner:
    """The runner for one engine: the runtime of its builder (named `name` if given, else after the runtime)."""
    candidates = [RUNTIMES[runtime] for runtime in AUTO if RUNTIMES[runtime].runs(engine)]
    if not candidates:
        raise VitdeployError(f"{engine.name}: no runtime runs {engine.backend!r} engines: expected one of "
                             f"{', '.join(b for runtime in RUNTIMES.values() for b in runtime.engine_backends)}")
    usable = [r for r in candidates if r.onnx_problem is None or r.onnx_problem() is None]
    runner = (usable or candidates)[0].run_engine(engine, threads)  # the runner says why it cannot run
    if name:
        runner.name = name
    return runner
