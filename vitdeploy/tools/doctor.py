"""What this machine can run, and why not: one fact per runtime, for `vitdeploy doctor` and every report.

Each fact comes from the checks the runtimes themselves make (vitdeploy.tools.hardware for the GPU,
vitdeploy.optional for what is installed, the runners' availability checks, TensorRT-RTX's support
matrix in vitdeploy.engine.tensorrt), so doctor says what `load`, `build`, `verify` and `bench` will
do here rather than a second opinion. Bench and verify reports carry the same facts (`environment`),
so a number in a report says which runtimes and GPU produced it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from vitdeploy.version import __version__
from vitdeploy.engine.openvino import version_of
from vitdeploy.engine.tensorrt import RTX_PORTABLE, RTX_SUPPORTED, rtx_unsupported
from vitdeploy.errors import VitdeployError
from vitdeploy.tools.hardware import (compute_capability, cuda_driver_version, driver_release, format_capability,
                                      gpu_name, gpu_peak, no_gpu_reason, torch_cuda)
from vitdeploy.optional import EXTRAS, install_hint, is_installed, require
from vitdeploy.runners import onnxruntime_problem
from vitdeploy.runners.onnxruntime import available_providers

CPP_DEMO = Path(__file__).resolve().parents[2] / "cpp_demo" / "build" / "vitdeploy_demo"  # in a source checkout
CPP_BUILD = "cmake -S cpp_demo -B cpp_demo/build && cmake --build cpp_demo/build -j2"


@dataclass(frozen=True)
class Fact:
    """One runtime here: `available` when it does something on this machine, `detail` what; `why_not` what
    it cannot do here and why (None: nothing); `extra` the vitdeploy extra that adds what is missing."""

    name: str
    available: bool
    version: str | None
    detail: str
    why_not: str | None = None
    extra: str | None = None

    def line(self) -> str:
        if not self.available:
            text = f"missing: {self.why_not}"
        else:
            text = f"ok: {self.detail}" if self.why_not is None else f"{self.detail}; {self.why_not}"
        return f"{self.name:<14} {self.version or '-':<13} {text}"


@dataclass(frozen=True)
class Environment:
    vitdeploy: str
    python: str
    platform: str
    cpu_count: int
    facts: tuple[Fact, ...]

    def lines(self) -> list[str]:
        header = f"vitdeploy {self.vitdeploy}, python {self.python}, {self.platform}, {self.cpu_count} CPUs"
        return [header, *(fact.line() for fact in self.facts)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["runtimes"] = list(data.pop("facts"))  # as JSON reads it back
        return data

    def fact(self, name: str) -> Fact:
        return next(fact for fact in self.facts if fact.name == name)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        """The inverse of `to_dict`, for reports written earlier (e.g. gpu_proof.json)."""
        fields = {key: value for key, value in data.items() if key != "runtimes"}
        return cls(**fields, facts=tuple(Fact(**fact) for fact in data["runtimes"]))


def _module(name: str) -> ModuleType | str:
    """The optional module, or why it cannot be used (not installed, or a broken install)."""
    try:
        return require(name)
    except VitdeployError:
        return f"not installed: {install_hint(name)}"
    except (ImportError, OSError) as exc:  # e.g. a wheel whose shared libraries do not load
        return f"installed but does not import ({str(exc).splitlines()[0]}): reinstall it"


def _missing(name: str, why: str) -> Fact:
    return Fact(name, False, None, "", why, EXTRAS[name])


def _torch_version() -> ModuleType:
    """torch/version.py alone (torch's version and CUDA build): importing torch itself takes seconds."""
    package = importlib.util.find_spec("torch")
    assert package is not None and package.submodule_search_locations is not None
    spec = importlib.util.spec_from_file_location("torch_version", Path(package.submodule_search_locations[0],
                                                                        "version.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_fact(capability: tuple[int, int] | None) -> Fact:
    """torch exports, verifies and benches (the export extra); a runtime install runs without it. It is imported
    only where a GPU is present, to count the GPUs it sees."""
    if not is_installed("torch"):
        return _missing("torch", f"not installed: {install_hint('torch')} (export, verify, bench, quantize; "
                                 "running an artifact needs no torch)")
    torch_gpu = torch_cuda() if capability is not None else None
    version = _torch_version()
    build = f"CUDA {version.cuda} build" if version.cuda else "CPU-only build"
    if torch_gpu is not None:
        return Fact("torch", True, version.__version__, f"{build}, {torch_gpu.device_count()} GPU(s) visible")
    why = "sees no GPU (see gpu)" if version.cuda else "no CUDA: install a CUDA build of torch"
    return Fact("torch", True, version.__version__, f"{build}, runs on the CPU", why)


def gpu_fact(capability: tuple[int, int] | None) -> Fact:
    if capability is None:
        return Fact("gpu", False, None, "", f"no CUDA GPU found ({no_gpu_reason()})")
    parts = [f"{gpu_name()}, compute capability {format_capability(capability)}"]
    torch_gpu = torch_cuda()
    if torch_gpu is not None:
        parts.append(f"{torch_gpu.get_device_properties(0).total_memory / 2**30:.1f} GiB")
    parts.append(f"driver {driver_release() or '?'} (CUDA {cuda_driver_version() or '?'})")
    peak = gpu_peak(gpu_name())
    why = None if peak else "not in vitdeploy's peak table: bench shows no % of peak"
    if peak:
        parts.append(f"peak table entry {peak['entry']}")
    return Fact("gpu", True, format_capability(capability), ", ".join(parts), why)


def onnxruntime_fact() -> Fact:
    ort = _module("onnxruntime")
    if isinstance(ort, str):
        return _missing("onnxruntime", ort)
    providers = available_providers()
    problem = onnxruntime_problem(cuda=True)  # what vitdeploy.load(backend="onnxruntime_cuda") says
    return Fact("onnxruntime", True, ort.__version__, f"providers {', '.join(providers)}",
                problem and f"CUDA: {problem}", "ort-gpu" if "CUDAExecutionProvider" not in providers else None)


def tensorrt_fact(capability: tuple[int, int] | None) -> Fact:
    trt = _module("tensorrt")
    if isinstance(trt, str):
        return _missing("tensorrt", trt)
    if capability is None:
        return Fact("tensorrt", True, trt.__version__, "installed",
                    "no GPU here: full TensorRT builds and runs engines on the GPU at hand")
    here = format_capability(capability)
    return Fact("tensorrt", True, trt.__version__, f"builds and runs engines for this GPU (compute capability {here})")


def tensorrt_rtx_fact(capability: tuple[int, int] | None) -> Fact:
    trt = _module("tensorrt_rtx")
    if isinstance(trt, str):
        return _missing("tensorrt_rtx", trt)
    detail = ("builds engines here (no GPU needed); runs them on RTX GPUs "
              + ", ".join(format_capability(c) for c in RTX_SUPPORTED))
    why = None
    if capability is None:
        why = "no GPU here"
    elif capability not in RTX_SUPPORTED:
        why = rtx_unsupported(capability)
    elif capability not in RTX_PORTABLE:
        why = (f"portable engines do not run on {format_capability(capability)}: build with "
               "`vitdeploy build --target-gpu`")
    return Fact("tensorrt_rtx", True, trt.__version__, detail, why)


def openvino_fact() -> Fact:
    ov = _module("openvino")
    if isinstance(ov, str):
        return _missing("openvino", ov)
    return Fact("openvino", True, version_of(ov), f"devices {', '.join(ov.Core().available_devices)}")


def cpp_demo_fact(demo: Path = CPP_DEMO) -> Fact:
    """The runtimes `vitdeploy_demo --version` says CMake compiled in (one line each)."""
    if demo.is_absolute() and demo.is_relative_to(Path.cwd()):
        demo = demo.relative_to(Path.cwd())  # as the user would type it from the checkout
    if not demo.is_file():
        return Fact("cpp_demo", False, None, "", f"not built: no {demo} ({CPP_BUILD})")
    try:
        run = subprocess.run([str(demo), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Fact("cpp_demo", False, None, "", f"{demo} does not run: {exc}")
    lines = run.stdout.strip().splitlines()
    if run.returncode or not lines:
        return Fact("cpp_demo", False, None, "", f"{demo} --version failed (exit {run.returncode}): "
                                                 f"{run.stderr.strip()[:200]}")
    if lines[0].startswith("no runtime compiled in"):
        return Fact("cpp_demo", True, None, str(demo), f"{lines[0]}: reconfigure with CMake (docs/cpp_demo.md)")
    return Fact("cpp_demo", True, None, f"{demo}: " + "; ".join(lines))


def probe(cpp_demo: Path = CPP_DEMO) -> Environment:
    """Every fact, asked now."""
    capability = compute_capability()
    facts = (torch_fact(capability), gpu_fact(capability), onnxruntime_fact(), tensorrt_fact(capability),
             tensorrt_rtx_fact(capability), openvino_fact(), cpp_demo_fact(cpp_demo))
    return Environment(vitdeploy=__version__, python=platform.python_version(),
                       platform=f"{platform.system()} {platform.machine()}", cpu_count=os.cpu_count() or 0,
                       facts=facts)


@functools.cache
def environment() -> Environment:
    """`probe()` once per process: the bench and verify reports of one run share it (probing imports every
    runtime and runs the C++ demo, so asking per report would cost seconds each)."""
    return probe()
