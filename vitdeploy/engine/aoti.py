"""AOTInductor engines: the pyramid compiled ahead of time by torch.export + AOTInductor into a .pt2 package.

`model.aoti.<precision>.pt2` holds the compiled kernels (a shared library) and the weights; Python loads
it with `torch._inductor.aoti_load_package`, C++ with libtorch's AOTIModelPackageLoader (the C++ demo).
The module compiled is the one the ONNX export compiled (the family's rewrites, the artifact's
weights checked by their sha256, normalisation in the graph if the artifact has it), with its
dynamic batch, and height/width where the artifact's are dynamic. bf16 runs the module under
autocast (matmuls and convolutions in bf16, normalisations and softmax in float32), with float32
outputs. A package is tied to the torch release that compiled it and to its device: on a CPU, to the
instruction set inductor generated code for (recorded, and checked before loading); on a GPU, to its
compute capability.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vitdeploy.artifact import load_artifact_directory
from vitdeploy.atomic import staged_files
from vitdeploy.description import EngineSection, TensorIO
from vitdeploy.engine.descriptions import (Builder, Engine, engine_description_path, engine_file_name,
                                           write_engine_description)
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.progress import Progress

BACKEND = "aoti"
PRECISIONS = ("fp32", "bf16")
DEVICES = ("cpu", "cuda")
X86_ISAS = ("DEFAULT", "AVX2", "AVX512")  # torch.backends.cpu.get_cpu_capability() on x86, each a superset


def _release(version: str) -> str:
    """`2.14.1` of `2.14.1+cu130`: the local build tag does not change what a package needs."""
    return version.split("+")[0]


def cpu_capability() -> str:
    """The vector instruction set torch (and the code inductor generates) uses on this CPU, with AMX if present."""
    torch = require("torch")
    capability = torch.backends.cpu.get_cpu_capability()
    return capability + ("+AMX" if torch.cpu._is_amx_tile_supported() else "")


def _device_target(device: str) -> str:
    """What the package is compiled for: the CPU's instruction set, or the GPU's compute capability."""
    torch = require("torch")
    if device == "cpu":
        return cpu_capability()
    if not torch.cuda.is_available():
        raise VitdeployError("--device cuda: torch sees no CUDA GPU (or is a CPU-only build): expected a GPU, or "
                             "build an AOTInductor engine for the CPU (--device cpu)")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def _io(artifact: Any) -> dict[str, TensorIO]:
    """The package's input and outputs as the description names them; -1 where a dimension is dynamic."""
    spec = artifact.input
    height, width = (-1, -1) if spec.dynamic else spec.opt_hw
    io = {spec.name: TensorIO(mode="input", dtype=spec.dtype, shape=tuple(spec.shape(-1, height, width)))}
    for output in artifact.outputs:
        shape = output.shape(-1, height, width) if not (output.spatial and spec.dynamic) else [-1, output.channels,
                                                                                                 -1, -1]
        io[output.name] = TensorIO(mode="output", dtype="float32", shape=tuple(shape))
    return io


def build_aoti(artifact_dir: Path, backend: str = BACKEND, precision: str = "fp32", progress: Progress | None = None,
               device: str = "cpu") -> Engine:
    """Export the artifact's pyramid with torch.export and compile it with AOTInductor for `device`; returns the
    engine (its .pt2, the description beside it)."""
    torch = require("torch")
    from vitdeploy.export.module import EXAMPLE_BATCH, dynamic_shapes, rebuild_export_module  # export side

    if device not in DEVICES:
        raise VitdeployError(f"--device {device}: expected one of {', '.join(DEVICES)} for AOTInductor")
    target = _device_target(device)
    artifact = load_artifact_directory(artifact_dir)
    progress = progress or Progress(total=3)
    spec = artifact.input
    package = artifact.directory / engine_file_name(BACKEND, precision, "pt2")
    started = time.perf_counter()
    with staged_files(artifact.directory, package.name) as staging:
        with progress.step(f"rebuilding {artifact.description.timm_name} with the artifact's weights and exporting "
                           "it with torch.export"):
            module = rebuild_export_module(artifact.description).to(device)
            if precision == "bf16":
                module = _autocast_module()(module, device)
            dtype = torch.uint8 if spec.dtype == "uint8" else torch.float32
            example = torch.zeros(spec.shape(EXAMPLE_BATCH, *spec.opt_hw), dtype=dtype, device=device)
            with torch.no_grad():
                exported = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(spec))
        with progress.step(f"compiling it with AOTInductor (torch {torch.__version__}, {device} {target}) into "
                           f"{package.name}"):
            with torch.no_grad():  # inductor freezes (weights as constants, pre-packed for oneDNN) only without grad
                torch._inductor.aoti_compile_and_package(exported, package_path=str(staging / package.name),
                                                         inductor_configs={"freezing": True})
        with progress.step(f"writing {engine_description_path(package).name}"):
            engine = write_engine_description(
                staging, package, artifact, backend=BACKEND, backend_version=_release(torch.__version__),
                precision=precision, device=device, io=_io(artifact), files=[staging / package.name], started=started,
                compute_capability=target if device == "cuda" else None,
                cpu_capability=target if device == "cpu" else None)
    return engine


def _autocast_module() -> type:
    torch = require("torch")

    class AutocastModule(torch.nn.Module):  # type: ignore[name-defined]  # torch, imported when building
        """`module` under autocast at bf16, outputs back to float32 (the engine's interface at every precision)."""

        def __init__(self, module: Any, device: str):
            super().__init__()
            self.module, self.device = module, device

        def forward(self, image: Any) -> tuple[Any, ...]:
            with torch.autocast(self.device, dtype=torch.bfloat16):
                outputs = self.module(image)
            return tuple(output.float() for output in outputs)

    return AutocastModule


def check_runtime(engine: EngineSection) -> None:
    """torch is installed at the release that compiled the package, and this machine runs its code."""
    torch = require("torch")
    installed = _release(torch.__version__)
    if installed != engine.backend_version:
        raise VitdeployError(f"engine was compiled by torch {engine.backend_version} but torch {installed} is "
                             "installed: an AOTInductor package loads on the torch release that built it; rebuild it "
                             "with `vitdeploy build --backend aoti`")
    if engine.device == "cuda":
        if not torch.cuda.is_available():
            raise VitdeployError("engine was compiled for a CUDA GPU but torch sees none: expected a GPU of compute "
                                 f"capability {engine.compute_capability}")
        major, minor = torch.cuda.get_device_capability()
        if f"{major}.{minor}" != engine.compute_capability:
            raise VitdeployError(f"engine was compiled for compute capability {engine.compute_capability}, this GPU "
                                 f"has {major}.{minor}: rebuild it here with `vitdeploy build --backend aoti`")
        return
    here, built = cpu_capability(), engine.cpu_capability or "DEFAULT"
    if not _runs(built, here):
        raise VitdeployError(f"engine was compiled for a CPU with {built}, this one has {here}: rebuild it here "
                             "with `vitdeploy build --backend aoti --device cpu`")


def _runs(built: str, here: str) -> bool:
    """Whether code generated for the CPU capability `built` runs on one with `here`."""
    (built_isa, *built_amx), (here_isa, *here_amx) = built.split("+"), here.split("+")
    if built_amx and not here_amx:
        return False
    if built_isa in X86_ISAS and here_isa in X86_ISAS:
        return X86_ISAS.index(built_isa) <= X86_ISAS.index(here_isa)
    return built_isa == here_isa


BUILDERS = {BACKEND: Builder(label="AOTInductor", precisions=PRECISIONS, build=build_aoti,
                             requires="torch", check_runtime=check_runtime)}
