"""Export-friendly rewrite of timm's Eva (EVA-02) position-embedding resampling at dynamic sizes.

Like a ViT, an Eva built with ``dynamic_img_size=True`` resamples its absolute pos-embed with
antialiased bicubic ``F.interpolate``, which exports as ``Resize(antialias=1)`` and TensorRT's ONNX
parser rejects. The rewrite resamples with the ViT adapter's matmul resampler instead (same
numbers); rotary embeddings are left to timm, which computes them from the runtime grid.
"""

from __future__ import annotations

import types
from typing import Protocol, cast

import torch
from timm.models.eva import Eva
from torch import Tensor

from vitdeploy.adapters.vit import _resampled_pos_embed
from vitdeploy.errors import VitdeployError


class _Rope(Protocol):
    """What Eva calls on its rotary embedding: every rope that timm's create_rope_embed builds has it."""

    def get_embed(self, shape: tuple[int, int]) -> Tensor: ...


def _pos_embed(self: Eva, x: Tensor) -> tuple[Tensor, Tensor | None]:
    """Eva._pos_embed for ``dynamic_img_size=True`` in eval mode (x is NHWC patch tokens)."""
    batch, grid_h, grid_w, dim = x.shape
    pos_embed = _resampled_pos_embed(self, grid_h, grid_w) if self.pos_embed is not None else None
    # timm types Eva.rope as the nn.Module that create_rope_embed returns, which is always one of its ropes
    rot_pos_embed = cast(_Rope, self.rope).get_embed(shape=(grid_h, grid_w)) if self.rope is not None else None
    x = x.view(batch, -1, dim)
    to_cat = [token.expand(batch, -1, -1) for token in (self.cls_token, self.reg_token) if token is not None]
    if self.no_embed_class:
        x = x + pos_embed if pos_embed is not None else x
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
    else:
        x = torch.cat(to_cat + [x], dim=1) if to_cat else x
        x = x + pos_embed if pos_embed is not None else x
    return self.pos_drop(x), rot_pos_embed


def adapt_eva(model: torch.nn.Module, dynamic: bool) -> torch.nn.Module:
    """Make a timm Eva's pos-embed resampling exportable; returns the same model.

    As for a ViT, a ``dynamic_img_size`` model is rewritten even when exported at one size, because
    timm's same-size early-out does not hold under torch.export.
    """
    if not isinstance(model, Eva):
        raise VitdeployError(f"adapt_eva got a {type(model).__name__}; expected a timm Eva")
    if type(model)._pos_embed is not Eva._pos_embed:
        raise VitdeployError(f"{type(model).__name__} overrides _pos_embed, which vitdeploy cannot rewrite; "
                             "expected a plain timm Eva")
    if dynamic and not model.dynamic_img_size:
        raise VitdeployError("dynamic export of an Eva built without dynamic_img_size; "
                             "expected timm_kwargs {'dynamic_img_size': true}")
    if model.patch_drop is not None:
        raise VitdeployError("Eva with patch dropout: expected patch_drop_rate = 0 for export")
    if model.dynamic_img_size:
        setattr(model, "_pos_embed", types.MethodType(_pos_embed, model))  # shadows the class's method
    return model
