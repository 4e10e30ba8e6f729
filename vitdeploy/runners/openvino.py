"""OpenVINO on the CPU: runs an engine built by `vitdeploy build --backend openvino`.

The description is checked before anything is compiled (files, runtime version, CPU precision
support); every feed is checked against the artifact's input rules before the runtime sees it.

The IR keeps the artifact's dynamic batch (and size) dimensions, but the runner compiles the model for
the concrete input shape it is fed: with static shapes the CPU plugin folds the shape arithmetic and
sizes its kernels and buffers once, a few per cent faster at batch 1 and up to ~10% at batch 8 on
vit_base (docs/benchmark.md, "Where the time goes"). Each compile packs its own copy of the weights, so
only the first `STATIC_SHAPES` shapes get one; any other shape shares one dynamic-shape compile.
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

STATIC_SHAPES = 2  # bench's batch 1 and 8, or a server's full and partial batch


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
        self._core = require("openvino").Core()
        self._model = self._core.read_model(str(self.engine_path))
        self._requests: dict[tuple[int, ...] | None, Any] = {}  # input shape (None: any other) -> infer request
        spec = self.description.input
        self._request(tuple(spec.shape(spec.batch.opt, *spec.opt_hw)))  # compile errors surface here, not mid-run

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request of a model compiled for `shape`, or of the shared dynamic one past STATIC_SHAPES."""
        if shape in self._requests:
            return self._requests[shape]
        key = shape if sum(k is not None for k in self._requests) < STATIC_SHAPES else None
        if key not in self._requests:
            model = self._model
            if key is not None and model.is_dynamic():
                model = model.clone()
                model.reshape({model.inputs[0].get_any_name(): list(key)})
            self._requests[key] = self._core.compile_model(model, DEVICE, self.config).create_infer_request()
        return self._requests[key]

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        image = feed_dict[self.description.input.name]
        request = self._request(tuple(image.shape))  # before the clock: a new shape compiles once
        start = time.perf_counter()
        results = request.infer(feed_dict)
        self.inference_time = time.perf_counter() - start
        by_name = {port.get_any_name(): value for port, value in results.items()}
        # The request's output buffers are reused by the next call.
        return OrderedDict((name, np.array(by_name[name], copy=True)) for name in self.output_names)

    def deactivate_impl(self) -> None:
        del self._requests, self._model, self._core
