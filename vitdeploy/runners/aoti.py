"""AOTInductor: runs a .pt2 package built by `vitdeploy build --backend aoti`.

The description is checked before the package is loaded (files and sha256, torch release, device);
every feed is checked against the artifact's input rules before the compiled code sees it. torch is
this runtime itself, imported when a runner is made.

A CPU package's weights are realigned after loading (`realign_constants`): torch's loader copies them
into one `std::malloc`'d blob, 16 bytes past a page boundary, so every weight starts 16 bytes off a
cache line and oneDNN's AMX/AVX-512 GEMMs read each row from two lines (vit_base bf16 ran 1.1x slower
than torch.compile at batch 1 and 1.3x at batch 8 with the same kernels; aligned, they tie).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

from vitdeploy.engine import Engine, check_engine
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.runners.base import Outputs, Prepared, Runner, host_outputs

ALIGNMENT = 64  # bytes: a cache line, what AVX-512 loads and AMX tile loads want


class AOTIRunner(Runner):
    """The compiled pyramid on its device; `threads` sets torch's intra-op threads (the package's OpenMP pool)."""

    def __init__(self, engine: Engine, threads: int | None = None, name: str | None = None):
        self.is_active = False  # polygraphy's __del__ reads it even if the checks below raise
        self.engine_path = engine.path
        description = check_engine(engine)
        section = description.engine
        peak_key = section.precision if section.device == "cuda" else None
        super().__init__(description, name or "aoti", precision=section.precision, peak_key=peak_key)
        self.profile, self.device, self.threads = section.profile, section.device, threads
        self._torch = require("torch")
        self._weights: dict[str, Any] = {}  # a CPU runner's realigned weights (it reads them in place)

    def activate_impl(self) -> None:
        if self.threads:
            self._torch.set_num_threads(self.threads)
        if self.device == "cuda":  # weights in cudaMalloc'd memory: aligned
            self._model = self._torch._inductor.aoti_load_package(str(self.engine_path))
            return
        with tempfile.TemporaryDirectory(prefix="vitdeploy-aoti-") as scratch:  # loaded, the file may go
            runner = self._torch._C._aoti.AOTIModelContainerRunnerCpu(
                str(extract_library(self.engine_path, Path(scratch))), 1)
        self._weights = realign_constants(runner)  # the runner reads them in place: kept as long as it runs
        self._model = lambda image: runner.run([image])

    def deactivate_impl(self) -> None:
        del self._model  # the runner first: it reads the weights below
        self._weights = {}

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        torch = self._torch
        image = torch.from_numpy(feed_dict[self.description.input.name]).to(self.device)
        cuda = self.device == "cuda"

        def run() -> Any:
            with torch.inference_mode():
                outputs = self._model(image)
            if cuda:
                torch.cuda.synchronize()
            return dict(zip(self.output_names, outputs))

        return Prepared(run=run, fetch=lambda outputs: host_outputs(outputs, self.output_names))

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        return self.run_prepared(feed_dict)


def extract_library(package: Path, directory: Path) -> Path:
    """The compiled model (one shared library holding kernels and weights) of a .pt2 package, extracted into
    `directory`; what torch's package loader loads, without its copy of the weights."""
    with zipfile.ZipFile(package) as archive:
        libraries = [name for name in archive.namelist() if "/data/aotinductor/model/" in name and name.endswith(".so")]
        if len(libraries) != 1:
            raise VitdeployError(f"{package.name} holds {len(libraries)} compiled models: expected the one "
                                 "`vitdeploy build --backend aoti` writes")
        return Path(archive.extract(libraries[0], directory))


def realign_constants(runner: Any) -> dict[str, Any]:
    """Give a CPU runner 64-byte-aligned copies of its weights (torch's allocator aligns) and free the blob it
    copied them into; returns the copies, which the runner uses in place: keep them while it runs. Does
    nothing where the weights are aligned already."""
    constants = runner.extract_constants_map(False)
    if all(data_address(tensor) % ALIGNMENT == 0 for tensor in constants.values()):
        return {}
    names = {fqn: name for name, fqn in runner.get_constant_names_to_original_fqns().items()}
    owned = {names.get(fqn, fqn): tensor.clone() for fqn, tensor in constants.items()}
    runner.update_constant_buffer(owned, True, True, True)  # the inactive set, user-managed: used in place
    runner.swap_constant_buffer()
    runner.free_inactive_constant_buffer()
    return owned


def data_address(tensor: Any) -> int:
    """Where a tensor's data starts, for oneDNN's packed (mkldnn) weights too."""
    torch = require("torch")
    return int(torch.ops.mkldnn.data_ptr(tensor)) if tensor.is_mkldnn else int(tensor.data_ptr())
