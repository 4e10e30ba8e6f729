"""OpenVINO on the CPU: runs an engine built by `vitdeploy build --backend openvino`.

The description is checked before anything is compiled (files, runtime version, CPU precision
support); every feed is checked against the artifact's input rules before the runtime sees it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from vitdeploy.engine import Engine, check_engine
from vitdeploy.engine.openvino import DEVICE
from vitdeploy.optional import require
from vitdeploy.runners.base import Outputs, Runner


class OpenVINORunner(Runner):
    """Compiles the IR for the CPU with the description's inference precision; outputs by name, in order."""

    def __init__(self, engine: Engine, threads: int | None = None, name: str | None = None):
        self.is_active = False  # polygraphy's __del__ reads it even if the checks below raise
        self.engine_path = engine.path
        description = check_engine(engine)
        super().__init__(description, name or "openvino", precision=engine.precision)
        self.profile = description.engine.profile
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": description.engine.inference_precision,
                                       "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads

    def activate_impl(self) -> None:
        compiled = require("openvino").Core().compile_model(str(self.engine_path), DEVICE, self.config)
        self._compiled, self._request = compiled, compiled.create_infer_request()

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        start = time.perf_counter()
        results = self._request.infer(feed_dict)
        self.inference_time = time.perf_counter() - start
        by_name = {port.get_any_name(): value for port, value in results.items()}
        # The request's output buffers are reused by the next call.
        return OrderedDict((name, np.array(by_name[name], copy=True)) for name in self.output_names)

    def deactivate_impl(self) -> None:
        del self._request, self._compiled
