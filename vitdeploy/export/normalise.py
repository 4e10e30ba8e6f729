"""Preprocessing baked into the graph (--bake-preprocessing): uint8 NHWC RGB in, normalised NCHW to the backbone.

A consumer then uploads a quarter of the bytes and needs no mean/std of its own. The operations
are the host preprocessing's (vitdeploy.preprocess.normalise) in the same order, so `verify`
compares this graph against host normalisation + eager timm like any other export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitdeploy.description import InputSpec


class NormaliseInGraph(nn.Module):
    """uint8 [N, H, W, 3] -> `(pixel / pixel_scale - mean) / std` as float32 [N, 3, H, W] -> `model`."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, model: nn.Module, input_spec: InputSpec):
        super().__init__()
        self.model = model
        self.pixel_scale = float(input_spec.pixel_scale)
        self.register_buffer("mean", torch.tensor(input_spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(input_spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> Any:
        image = pixels.to(torch.float32).permute(0, 3, 1, 2)  # TensorRT transposes no uint8 tensor
        return self.model((image / self.pixel_scale - self.mean) / self.std)
