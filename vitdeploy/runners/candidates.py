"""What `vitdeploy bench` compares: every runner it times, as a picklable spec.

A spec is made into a runner through this package (the torch runner, the ONNX Runtime of `RUNTIMES`,
`engine_runner`), either in the bench process or, isolated, in a worker process of its own: so
both modes time the runners `vitdeploy.load` and `verify` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitdeploy.artifact import Artifact
from vitdeploy.engine import Engine, find_engines
from vitdeploy.runners import RUNTIMES, engine_problem, engine_runner
from vitdeploy.runners.base import Runner


COMPILE_PRECISIONS = ("fp32", "bf16", "fp16")  # torch.compile alone (fp32) or with autocast


@dataclass(frozen=True)
class RunnerSpec:
    """How to make one runner. kind: "torch" (eager PyTorch, the reference, and its peers), "onnx" (ONNX
    Runtime on an ONNX graph of the artifact) or "engine" (an engine file and its runtime)."""

    kind: str
    device: str = "cpu"
    autocast: str | None = None  # torch: under autocast at this precision
    compile: bool = False  # torch: torch.compile with freezing
    int8: bool = False  # torch: torchao's int8 for x86
    path: Path | None = None  # onnx: the graph (None: the artifact's model.onnx); engine: the engine file
    name: str | None = None  # the row's backend name (None: the runner's own)

    def create(self, artifact: Artifact, threads: int | None, pyramid: object | None = None) -> Runner:
        """The runner, not yet activated. `pyramid`: eager modules of another torch runner to share (in-process)."""
        if self.kind == "torch":
            from vitdeploy.runners.torch import TorchRunner  # the export side (torch, timm): bench's reference

            return TorchRunner(artifact.description, device=self.device, autocast=self.autocast,
                               compile=self.compile, int8=self.int8, name=self.name,
                               pyramid=pyramid)  # type: ignore[arg-type]
        if self.kind == "onnx":
            run_onnx = RUNTIMES[onnxruntime_name(self.device)].run_onnx
            assert run_onnx is not None  # ONNX Runtime's runtimes run ONNX graphs
            runner = run_onnx(artifact.description, self.path or artifact.checked_onnx, threads)
        else:
            assert self.path is not None
            runner = engine_runner(Engine.at(self.path), threads)
        if self.name:
            runner.name = self.name
        return runner


def onnxruntime_name(device: str) -> str:
    return "onnxruntime_cuda" if device == "cuda" else "onnxruntime_cpu"


def engine_specs(artifact: Artifact, device: str,
                 precisions: tuple[str, ...] = ()) -> tuple[list[RunnerSpec], dict[str, str]]:
    """A spec for every engine in the artifact (of `precisions`, if given) that runs on `device` here, fp32
    first; and for each other engine why not."""
    found, skipped = [], {}
    for engine in find_engines(artifact.directory):
        if precisions and engine.precision not in precisions:
            continue
        runs_on = engine.section.device.lower()
        problem = (f"{engine.backend} engines run on {'a GPU' if runs_on == 'cuda' else 'the CPU'} (--device "
                   f"{runs_on})" if runs_on != device else engine_problem(artifact, engine))
        if problem:
            skipped[engine.name] = problem
        else:
            found.append((engine.precision != "fp32", engine.backend, engine.path))
    return [RunnerSpec("engine", device, path=path, name=backend) for _, backend, path in sorted(found)], skipped
