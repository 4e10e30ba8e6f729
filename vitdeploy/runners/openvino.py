"""OpenVINO on the CPU: runs an engine built by `vitdeploy build --backend openvino`.

The description is checked before anything is compiled (files, runtime version, CPU precision
support); every feed is checked against the artifact's input rules before the runtime sees it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from vitdeploy.engine.openvino import DEVICE, check_openvino_engine
from vitdeploy.engine.sidecar import read_sidecar
from vitdeploy.inputs import layout_shape
from vitdeploy.runners.base import CheckedInputs


class OpenVINORunner(CheckedInputs, BaseRunner):
    """Compiles the IR for the CPU with the description's inference precision; outputs by name, in order."""

    def __init__(self, engine_path: Path, threads: int | None = None, name: str | None = None):
        self.is_active = False  # polygraphy's __del__ reads it even if the checks below raise
        self.engine_path = Path(engine_path)
        self.sidecar = read_sidecar(self.engine_path)
        self.meta = self.sidecar
        self._ov = check_openvino_engine(self.engine_path, self.sidecar)
        engine = self.sidecar["engine"]
        super().__init__(name=name or f"OpenVINO {engine['precision']}", prefix="openvino-runner")
        self.config = {"INFERENCE_PRECISION_HINT": engine["inference_precision"], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.output_names = [output["name"] for output in self.sidecar["outputs"]]

    def activate_impl(self) -> None:
        self._compiled = self._ov.Core().compile_model(str(self.engine_path), DEVICE, self.config)
        self._request = self._compiled.create_infer_request()

    def get_input_metadata_impl(self) -> TensorMetadata:
        spec = self.meta["input"]
        return TensorMetadata().add(spec["name"], np.dtype(spec["dtype"]), layout_shape(spec, -1, -1, -1))

    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict[str, np.ndarray]:
        start = time.perf_counter()
        results = self._request.infer(feed_dict)
        self.inference_time = time.perf_counter() - start
        by_name = {port.get_any_name(): value for port, value in results.items()}
        # The request's output buffers are reused by the next call.
        return OrderedDict((name, np.array(by_name[name], copy=True)) for name in self.output_names)

    def deactivate_impl(self) -> None:
        del self._request, self._compiled
