"""The runner every runtime implements, in polygraphy's style: `infer` checks the feed once, `*_impl` runs it.

Runners are polygraphy runners, so polygraphy's Comparator drives them in `vitdeploy verify`;
`vitdeploy.load` and `vitdeploy bench` use the very same objects. `prepare` is the timed path of
bench: it stages a checked feed where the runtime reads it (device memory, IO binding) and returns
a call that runs one synchronous inference and nothing else.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from vitdeploy.description import Description, Profile
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import check_feed

Outputs = OrderedDict[str, np.ndarray]


@dataclass(frozen=True)
class Prepared:
    """A staged inference: `run()` is what bench times; `fetch(run())` gives float32 host outputs, in order."""

    run: Callable[[], Any]
    fetch: Callable[[Any], Outputs]


def host_outputs(outputs: dict[str, Any], names: list[str]) -> Outputs:
    """Outputs (numpy arrays or torch tensors, on any device) as float32 numpy arrays in pyramid order."""
    return OrderedDict((name, np.ascontiguousarray(outputs[name].float().cpu().numpy() if hasattr(outputs[name], "cpu")
                                                   else np.asarray(outputs[name], np.float32))) for name in names)


class Runner(BaseRunner):
    """A runtime running an artifact (or engine) described by `description`.

    `precision` is how the runtime computes (the tolerance verify holds it to); `peak_key` which GPU peak
    throughput applies to it (fp32, tf32, fp16, bf16; None on a CPU).
    """

    profile: dict[str, Profile] | None = None  # an engine's optimisation profile, checked with every feed
    torch_feeds = False  # whether infer also takes torch tensors (TensorRT: CUDA tensors without copies)

    def __init__(self, description: Description, name: str, precision: str = "fp32", peak_key: str | None = None):
        super().__init__(name=name, prefix=name)
        self.description, self.precision, self.peak_key = description, precision, peak_key
        self.output_names = description.output_names

    def check(self, feed_dict: dict[str, Any]) -> Any:
        """The feed's image array, after the one input check (dtype, layout, batch, size rule, profile)."""
        return check_feed(self.description.input, feed_dict, self.profile, self.torch_feeds)

    def infer(self, feed_dict: dict[str, Any], check_inputs: bool = True, *args: Any, **kwargs: Any) -> Outputs:
        """Check the feed (always: it is what the exported graph cannot do), then run it."""
        if not self.is_active:
            raise VitdeployError(f"runner {self.name} is not active: use it in a `with` block or call activate()")
        self.check(feed_dict)
        return super().infer(feed_dict, False, *args, **kwargs)  # polygraphy's own check is a subset of ours

    def get_input_metadata_impl(self) -> TensorMetadata:
        spec = self.description.input
        return TensorMetadata().add(spec.name, np.dtype(spec.dtype), spec.shape(-1, -1, -1))

    def prepare(self, feed_dict: dict[str, Any]) -> Prepared:
        """The checked feed staged for timing (see the module docstring)."""
        self.check(feed_dict)
        return self.prepare_impl(feed_dict)

    def run_prepared(self, feed_dict: dict[str, Any]) -> Outputs:
        """`infer_impl` of a runtime whose one inference is its prepared call (torch, AOTInductor): only the run is
        timed, not the staging or the copy back."""
        prepared = self.prepare_impl(feed_dict)
        start = time.perf_counter()
        outputs = prepared.run()
        self.inference_time = time.perf_counter() - start
        return prepared.fetch(outputs)

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        return Prepared(run=lambda: self.infer_impl(feed_dict), fetch=lambda outputs: host_outputs(outputs,
                                                                                                 self.output_names))
