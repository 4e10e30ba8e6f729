"""Running a vitdeploy engine with polygraphy's TrtRunner (TensorRT or TensorRT-RTX).

The engine's description is checked before it is deserialised (vitdeploy.engine.check_engine), and
every feed against its optimisation profile before the runtime sees it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from polygraphy.backend.trt import TrtRunner, engine_from_bytes
from polygraphy.exception import PolygraphyException

from vitdeploy.engine import Engine, check_engine
from vitdeploy.engine.tensorrt_flavour import LABELS, active_backend, use_backend
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import require
from vitdeploy.runners.base import Outputs, Prepared, Runner, host_outputs


def _check_engine_matches(engine: Any, description: Any) -> None:
    """The deserialised engine has the tensors and profile its description promises."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    expected = list(description.engine.io)
    if sorted(names) != sorted(expected):
        raise VitdeployError(f"engine tensors {names} differ from its description's {expected}: rebuild the engine")
    for name, shapes in description.engine.profile.items():
        actual = [tuple(s) for s in engine.get_tensor_profile_shape(name, 0)]
        if actual != [shapes.min, shapes.opt, shapes.max]:
            raise VitdeployError(f"engine profile of '{name}' is min/opt/max {actual}, its description says "
                                 f"{[shapes.min, shapes.opt, shapes.max]}: rebuild the engine")


class TensorRTRunner(Runner):
    """polygraphy's TrtRunner over a vitdeploy engine; returns the pyramid outputs by name, in order.

    Construction checks the description (so a wrong GPU or version fails here, not in TensorRT); every
    feed is checked against the engine profile. Feeds are numpy arrays or torch tensors (CUDA ones skip
    copies, with `copy_outputs_to_host=False`).
    """

    torch_feeds = True

    def __init__(self, engine: Engine, name: str | None = None):
        self.is_active = False  # polygraphy's __del__ reads it even if the checks below raise
        self.engine_path = engine.path
        description = check_engine(engine)  # before anything is deserialised
        self.backend = engine.backend
        super().__init__(description, name or engine.backend, precision=engine.precision,
                         peak_key="tf32" if engine.precision == "fp32" else engine.precision)
        self.profile = description.engine.profile
        self._trt = TrtRunner(self._deserialize, name=self.name)

    def _deserialize(self) -> Any:
        try:
            engine = engine_from_bytes(self.engine_path.read_bytes())
        except PolygraphyException as exc:
            raise VitdeployError(f"{LABELS[self.backend]} could not deserialise {self.engine_path.name} although "
                                 f"its description's checks passed: {exc}") from None
        _check_engine_matches(engine, self.description)
        return engine

    def activate_impl(self) -> None:
        use_backend(self.backend)
        self._trt.activate()

    def deactivate_impl(self) -> None:
        self._trt.deactivate()

    def _run(self, feed_dict: dict[str, Any], **kwargs: Any) -> OrderedDict[str, Any]:
        if active_backend() != self.backend:  # another runner in this process switched polygraphy
            use_backend(self.backend)
        outputs = self._trt.infer(feed_dict, check_inputs=False, **kwargs)
        self.inference_time = self._trt.last_inference_time()
        # Host outputs are views of buffers that the next call overwrites.
        return OrderedDict((name, outputs[name].copy() if isinstance(outputs[name], np.ndarray) else outputs[name])
                           for name in self.output_names)

    def infer_impl(self, feed_dict: dict[str, Any], **kwargs: Any) -> Outputs:
        return self._run(feed_dict, **kwargs)

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        """The input on the GPU beforehand, through torch (bench's timing of device-resident inputs)."""
        torch = require("torch")
        name = self.description.input.name
        feed = {name: torch.as_tensor(feed_dict[name]).cuda()}
        torch.cuda.synchronize()  # the copy runs on torch's stream, the engine on polygraphy's
        return Prepared(run=lambda: self._run(feed, copy_outputs_to_host=False),
                        fetch=lambda outputs: host_outputs(outputs, self.output_names))
