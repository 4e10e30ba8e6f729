"""Running a vitdeploy engine with polygraphy's TrtRunner (TensorRT or TensorRT-RTX).

The sidecar is checked before the engine is deserialised (see engine/sidecar.py), and every feed is
checked against the engine's optimisation profile before the runtime sees it: TensorRT's own answer
to an out-of-profile shape is an error log and garbage or no outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.trt import TrtRunner

from vitdeploy.engine.backend import LABELS, active_backend, use_backend
from vitdeploy.engine.sidecar import check_engine, profile_table
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import axis_names, dtype_hint, feed_image, image_hw, size_error


def check_feed(feed_dict: dict[str, Any], sidecar: dict[str, Any]) -> None:
    """Raise a VitdeployError saying what was expected unless `feed_dict` fits the engine's profile."""
    spec, profile = sidecar["input"], sidecar["engine"]["profile"]
    name = spec["name"]
    array = feed_image(spec, feed_dict)
    if type(array).__module__.split(".")[0] not in ("numpy", "torch") or not hasattr(array, "shape"):
        raise VitdeployError(f"input '{name}' is a {type(array).__name__}: expected a numpy.ndarray or torch.Tensor")
    if str(array.dtype).removeprefix("torch.") != spec["dtype"]:
        raise VitdeployError(f"input '{name}' has dtype {array.dtype}: expected {spec['dtype']} ({dtype_hint(spec)})")
    shape, bounds = list(array.shape), profile[name]
    if len(shape) != len(bounds["min"]):
        raise VitdeployError(f"input '{name}' has shape {shape}: expected {len(bounds['min'])} dimensions "
                             f"({spec['layout']})\n{profile_table(profile)}")
    for axis, (size, low, high) in enumerate(zip(shape, bounds["min"], bounds["max"])):
        if not low <= size <= high:
            axis_name = axis_names(spec)[axis]
            raise VitdeployError(f"input '{name}' has shape {shape}, outside the engine profile ({axis_name} "
                                 f"{size} is not in {low}..{high}):\n{profile_table(profile)}")
    problem = size_error(spec, *image_hw(spec, shape))
    if problem:
        raise VitdeployError(f"input '{name}': {problem}")


def _check_engine_matches(engine, sidecar: dict[str, Any]) -> None:
    """The deserialised engine has the tensors and profile its sidecar promises."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    expected = list(sidecar["engine"]["io"])
    if sorted(names) != sorted(expected):
        raise VitdeployError(f"engine tensors {names} differ from its sidecar's {expected}: rebuild the engine")
    for name, shapes in sidecar["engine"]["profile"].items():
        actual = [list(s) for s in engine.get_tensor_profile_shape(name, 0)]
        if actual != [shapes["min"], shapes["opt"], shapes["max"]]:
            raise VitdeployError(f"engine profile of '{name}' is min/opt/max {actual}, its sidecar says "
                                 f"{[shapes['min'], shapes['opt'], shapes['max']]}: rebuild the engine")


class TensorRTRunner(TrtRunner):
    """polygraphy's TrtRunner over a vitdeploy engine; returns the pyramid outputs by name, in order.

    Construction checks the sidecar (so a wrong GPU or version fails here, not in TensorRT); `infer`
    checks the feed against the engine profile. Feeds are numpy arrays, or torch tensors (on the GPU to
    skip copies, with `copy_outputs_to_host=False`).
    """

    def __init__(self, engine_path: Path, name: str | None = None):
        self.is_active = False  # polygraphy's __del__ reads it even if the checks below raise
        self.engine_path = Path(engine_path)
        self.sidecar = check_engine(self.engine_path)  # before anything is deserialised
        self.backend = self.sidecar["engine"]["backend"]
        self.output_names = [output["name"] for output in self.sidecar["outputs"]]
        precision = self.sidecar["engine"]["precision"]
        super().__init__(self._deserialize, name=name or f"{LABELS[self.backend]} {precision}")

    def _deserialize(self):
        from polygraphy.backend.trt import engine_from_bytes
        from polygraphy.exception import PolygraphyException

        try:
            engine = engine_from_bytes(self.engine_path.read_bytes())
        except PolygraphyException as exc:
            raise VitdeployError(f"{LABELS[self.backend]} could not deserialise {self.engine_path.name} although "
                                 f"its sidecar checks passed: {exc}") from None
        _check_engine_matches(engine, self.sidecar)
        return engine

    def activate_impl(self) -> None:
        use_backend(self.backend)
        super().activate_impl()

    def infer(self, feed_dict: dict[str, Any], check_inputs: bool = True, *args: Any,
              **kwargs: Any) -> OrderedDict[str, Any]:
        """Check `feed_dict` against the engine profile, then run it (extra arguments go to TrtRunner)."""
        check_feed(feed_dict, self.sidecar)
        if not self.is_active:
            raise VitdeployError(f"runner for {self.engine_path.name} is not active: use it in a `with` block")
        if active_backend() != self.backend:  # another runner in this process switched polygraphy
            use_backend(self.backend)
        outputs = super().infer(feed_dict, check_inputs, *args, **kwargs)
        # Host outputs are views of buffers that the next call overwrites.
        return OrderedDict((name, outputs[name].copy() if isinstance(outputs[name], np.ndarray) else outputs[name])
                           for name in self.output_names)
