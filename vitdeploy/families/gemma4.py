"""timm Gemma 4 vision encoder (`gemma4_vit_*`, `*_enc`): a ViT with 2-D RoPE over a patch grid of any size.

Two of timm's steps do not export: the position embedding is a one-hot matmul against a 10240-row
table (a [B, 2, N, 10240] tensor in the graph), and forward_intermediates recovers the NCHW grid from
the largest position id with `.item()`, a data-dependent size torch.export leaves undefined. The family
looks the rows up instead (the same numbers: a one-hot row times the table is that row) and takes the
grid from the input's height and width. Sizes: multiples of the patch size, and of patch size x pooling
kernel where the encoder pools soft tokens (timm asserts it). The clipped linears (E4B) clamp with
tensor bounds, which the exporter's optimiser emits as a Clip with undefined inputs: they become Where ops.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
from timm.models.gemma4_vit import Gemma4ClippableLinear, Gemma4PatchEmbed, Gemma4VitClassifier, Gemma4VitEncoder
from torch import Tensor, nn

from vitdeploy.errors import VitdeployError
from vitdeploy.families.base import Family, register


def _encoder(model: nn.Module) -> Gemma4VitEncoder:
    encoder = model.encoder if isinstance(model, Gemma4VitClassifier) else model
    if not isinstance(encoder, Gemma4VitEncoder):
        raise VitdeployError(f"family 'gemma4' got a {type(model).__name__}; expected a timm Gemma4VitEncoder")
    return encoder


def _position_embeddings(self: Gemma4PatchEmbed, position_ids: Tensor, padding_positions: Tensor | None) -> Tensor:
    """Gemma4PatchEmbed._position_embeddings as a row lookup per axis (x, then y) instead of a one-hot matmul."""
    ids = position_ids.clamp(min=0)
    table = self.position_embedding_table
    embeddings = table[0][ids[..., 0]] + table[1][ids[..., 1]]
    if padding_positions is not None:
        embeddings = torch.where(padding_positions.unsqueeze(-1), 0.0, embeddings)
    return embeddings


def _clamp(x: Tensor, low: Any, high: Any) -> Tensor:
    """torch.clamp with tensor bounds as two Where ops (NaN stays NaN, as in clamp)."""
    x = torch.where(x < low, low, x)
    return torch.where(x > high, high, x)


def _clipped_linear(self: Gemma4ClippableLinear, x: Tensor) -> Tensor:
    """Gemma4ClippableLinear.forward with the clamps as Where ops: the exporter's optimiser turns a clamp (or
    Max and Min) with tensor bounds into a Clip whose bound inputs are left undefined."""
    if self.use_clipped:
        x = _clamp(x, self.input_min, self.input_max)
    x = self.linear(x)
    if self.use_clipped:
        x = _clamp(x, self.output_min, self.output_max)
    return x


def _forward_intermediates(self: Gemma4VitEncoder, x: Tensor, *args: Any, output_fmt: str = "NCHW",
                           intermediates_only: bool = False, **kwargs: Any) -> Any:
    """timm's forward_intermediates in NLC, reshaped to the grid of the image's size (no `.item()`)."""
    timm_forward: Any = type(self).forward_intermediates  # the class's, under this bound replacement
    result = timm_forward(self, x, *args, output_fmt="NLC", intermediates_only=intermediates_only, **kwargs)
    if output_fmt != "NCHW":
        return result
    (patch_h, patch_w), batch = self.patch_size, x.shape[0]
    grid_h, grid_w = x.shape[-2] // patch_h, x.shape[-1] // patch_w

    def nchw(y: Tensor) -> Tensor:
        return y.reshape(batch, grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()

    if intermediates_only:
        return [nchw(y) for y in result]
    final, intermediates = result
    return final, [nchw(y) for y in intermediates]


@register
class Gemma4(Family):
    name = "gemma4"
    timm_classes = ("Gemma4VitClassifier", "Gemma4VitEncoder")
    small_kwargs = {"depth": 2}

    def size_multiple(self, model: nn.Module) -> int:
        encoder = _encoder(model)
        cell = encoder.pooling_kernel_size if encoder.global_pool == "soft" else 1
        return math.lcm(*(size * cell for size in encoder.patch_size))

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        encoder = _encoder(model)
        embed = encoder.patch_embed
        setattr(embed, "_position_embeddings", types.MethodType(_position_embeddings, embed))
        setattr(encoder, "forward_intermediates", types.MethodType(_forward_intermediates, encoder))
        for module in model.modules():
            if isinstance(module, Gemma4ClippableLinear):
                setattr(module, "forward", types.MethodType(_clipped_linear, module))
        return model

    def random_init(self, model: nn.Module, seed: int) -> None:
        """timm's clip bounds are infinite until a checkpoint sets them: seeded finite ones, so parity sees them."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, Gemma4ClippableLinear) and module.use_clipped:
                    for name, sign in (("input_min", -1), ("input_max", 1), ("output_min", -1), ("output_max", 1)):
                        bound = module.get_buffer(name)
                        bound.fill_(sign * (1.0 + float(torch.rand((), generator=generator))))
