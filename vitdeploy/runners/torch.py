"""Eager PyTorch: the unmodified timm model, the reference every export is compared against."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from vitdeploy.inputs import layout_shape, pixels_in_graph
from vitdeploy.preprocess import normalise
from vitdeploy.pyramid import pyramid_module
from vitdeploy.runners.base import CheckedInputs

ModelForSize = Callable[[tuple[int, int]], torch.nn.Module]


class TorchRunner(CheckedInputs, BaseRunner):
    """Runs the timm pyramid eagerly. `model_for_size` gives the model for an input size: a Hiera is
    built for one resolution, so the reference at each size is the timm model created at that size."""

    def __init__(self, meta: dict[str, Any], model_for_size: ModelForSize, name: str | None = None):
        super().__init__(name=name, prefix="torch-runner")
        self.meta, self._model_for_size = meta, model_for_size
        self._models: dict[tuple[int, int], torch.nn.Module] = {}

    def activate_impl(self) -> None:
        self._models = {}

    def get_input_metadata_impl(self) -> TensorMetadata:
        spec = self.meta["input"]
        return TensorMetadata().add(spec["name"], np.dtype(spec["dtype"]), layout_shape(spec, -1, -1, -1))

    def _pyramid(self, hw: tuple[int, int]) -> torch.nn.Module:
        if hw not in self._models:
            self._models[hw] = pyramid_module(self._model_for_size(hw), self.meta["outputs"],
                                              self.meta.get("pyramid"))
        return self._models[hw]

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        spec = self.meta["input"]
        batch = feed_dict[spec["name"]]
        # Pixels an artifact normalises in its graph are normalised here as the host would do it.
        image = torch.from_numpy(normalise(batch, spec) if pixels_in_graph(spec) else np.ascontiguousarray(batch))
        model = self._pyramid((image.shape[2], image.shape[3]))
        start = time.perf_counter()
        with torch.no_grad():
            outputs = model(image)
        self.inference_time = time.perf_counter() - start
        names = [o["name"] for o in self.meta["outputs"]]
        return OrderedDict((name, out.contiguous().numpy()) for name, out in zip(names, outputs))

    def deactivate_impl(self) -> None:
        self._models = {}
