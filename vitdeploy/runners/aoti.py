"""AOTInductor: runs a .pt2 package built by `vitdeploy build --backend aoti` with torch's package loader.

The description is checked before the package is loaded (files and sha256, torch release, device);
every feed is checked against the artifact's input rules before the compiled code sees it. torch is
this runtime itself, imported when a runner is made.
"""

from __future__ import annotations

from typing import Any

from vitdeploy.engine import Engine, check_engine
from vitdeploy.optional import require
from vitdeploy.runners.base import Outputs, Prepared, Runner, host_outputs


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

    def activate_impl(self) -> None:
        if self.threads:
            self._torch.set_num_threads(self.threads)
        self._model = self._torch._inductor.aoti_load_package(str(self.engine_path))

    def deactivate_impl(self) -> None:
        del self._model

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
