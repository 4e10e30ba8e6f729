"""Eager PyTorch: the unmodified timm model, the reference every export is compared against.

Optionally under autocast (bf16, fp16) or torch.compile, which bench times beside it. Pixels an
artifact normalises in its graph are normalised here as the host would do it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdeploy import families
from vitdeploy.description import Description
from vitdeploy.models import ModelForSize, reference_pyramids
from vitdeploy.preprocess import normalise
from vitdeploy.runners.base import Outputs, Prepared, Runner, host_outputs

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner(Runner):
    """Runs the timm pyramid eagerly, per input size (a Hiera is built for one resolution: the reference at
    each size is the timm model created at that size, see vitdeploy.families)."""

    def __init__(self, description: Description, checkpoint: Path | None = None, device: str = "cpu",
                 autocast: str | None = None, compile: bool = False, name: str | None = None,
                 pyramid: ModelForSize | None = None):
        """`pyramid`: another runner's eager modules to reuse (autocast and torch.compile wrap, not change, them)."""
        tf32 = device == "cuda" and torch.backends.cuda.matmul.allow_tf32
        peak_key = (autocast or ("tf32" if tf32 else "fp32")) if device == "cuda" else None
        default_name = "torch-compile" if compile else ("torch-autocast" if autocast else "torch")
        super().__init__(description, name or default_name, precision=autocast or "fp32", peak_key=peak_key)
        self.device, self.autocast, self.compile = device, autocast, compile
        self.family = families.get(description.family)  # where the description's family name becomes a Family
        self.pyramid = pyramid or reference_pyramids(description, self.family, checkpoint, device)  # hw -> module
        self._compiled: dict[tuple[int, int], Callable] = {}

    def module(self, hw: tuple[int, int]) -> Callable:
        if not self.compile:
            return self.pyramid(hw)
        if hw not in self._compiled:
            self._compiled[hw] = torch.compile(self.pyramid(hw))
        return self._compiled[hw]

    def _image(self, batch: np.ndarray) -> torch.Tensor:
        spec = self.description.input
        image = normalise(batch, spec) if spec.normalised_in_graph else np.ascontiguousarray(batch)
        return torch.from_numpy(image).to(self.device)

    def prepare_impl(self, feed_dict: dict[str, Any]) -> Prepared:
        image = self._image(feed_dict[self.description.input.name])  # untimed (well under 1% of a call)
        module = self.module((image.shape[2], image.shape[3]))
        autocast = (torch.autocast(self.device, dtype=AUTOCAST[self.autocast]) if self.autocast
                    else contextlib.nullcontext())
        cuda = self.device == "cuda"

        def run() -> dict[str, torch.Tensor]:
            with torch.inference_mode(), autocast:
                outputs = module(image)
            if cuda:
                torch.cuda.synchronize()
            return dict(zip(self.output_names, outputs))

        return Prepared(run=run, fetch=lambda outputs: host_outputs(outputs, self.output_names))

    def infer_impl(self, feed_dict: dict[str, Any]) -> Outputs:
        prepared = self.prepare_impl(feed_dict)
        start = time.perf_counter()
        outputs = prepared.run()
        self.inference_time = time.perf_counter() - start
        return prepared.fetch(outputs)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass
