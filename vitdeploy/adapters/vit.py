"""Export-friendly rewrite of timm's VisionTransformer (and distilled DeiT) position-embedding resampling.

With ``dynamic_img_size=True`` timm resamples the stored pos-embed grid to each input's patch grid
with antialiased bicubic ``F.interpolate``, which exports as ``Resize(antialias=1)``: TensorRT's
ONNX parser rejects it. The rewrite resamples with :func:`resample_bicubic` instead, which gives the
same numbers from MatMul and elementwise ops, with the grid size taken from the runtime input.
"""

import types

import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from vitdeploy.adapters.resample import resample_bicubic
from vitdeploy.errors import VitdeployError


def _resampled_pos_embed(model: VisionTransformer | Eva, grid_h: int, grid_w: int) -> Tensor:
    """timm's ``resample_abs_pos_embed`` without the size early-out, using resample_bicubic (ViT and Eva)."""
    num_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    old_h, old_w = model.patch_embed.grid_size
    pos_embed = model.pos_embed
    if pos_embed is None:  # the adapters install their rewrite only on a model with one
        raise VitdeployError(f"{type(model).__name__} has no absolute position embedding to resample")
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)
    grid = resample_bicubic(grid, (grid_h, grid_w), antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix else grid


def _pos_embed(self: VisionTransformer, x: Tensor) -> Tensor:
    """VisionTransformer._pos_embed (and VisionTransformerDistilled's) for ``dynamic_img_size=True`` (x is
    NHWC patch tokens): the prefix tokens are class, then distillation (DeiT distilled) or registers."""
    to_cat = []
    if self.cls_token is not None:
        to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
    if isinstance(self, VisionTransformerDistilled):
        to_cat.append(self.dist_token.expand(x.shape[0], -1, -1))
    elif self.reg_token is not None:
        to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
    batch, grid_h, grid_w, dim = x.shape
    pos_embed = _resampled_pos_embed(self, grid_h, grid_w)
    x = x.view(batch, -1, dim)
    if self.no_embed_class:
        x = torch.cat(to_cat + [x + pos_embed], dim=1) if to_cat else x + pos_embed
    else:
        x = (torch.cat(to_cat + [x], dim=1) if to_cat else x) + pos_embed
    return self.pos_drop(x)


def adapt_vit(model: torch.nn.Module, dynamic: bool) -> torch.nn.Module:
    """Make a timm VisionTransformer's pos-embed resampling exportable; returns the same model.

    A ``dynamic_img_size`` model is rewritten even when exported at one size, because timm skips
    its same-size early-out under torch.export and would still emit an antialiased Resize.
    """
    if not isinstance(model, VisionTransformer):
        raise VitdeployError(
            f"adapt_vit got a {type(model).__name__}; expected a timm VisionTransformer"
        )
    if dynamic and not model.dynamic_img_size:
        raise VitdeployError(
            "dynamic export of a ViT built without dynamic_img_size; "
            "expected timm_kwargs {'dynamic_img_size': true}"
        )
    if not (model.dynamic_img_size and model.pos_embed is not None):
        return model  # the stored embedding is added as is: nothing to rewrite
    if type(model)._pos_embed not in _REWRITTEN:
        raise VitdeployError(
            f"{type(model).__name__} overrides _pos_embed, which vitdeploy cannot rewrite for dynamic_img_size; "
            "expected a plain timm VisionTransformer or DeiT distilled (or export it built without dynamic_img_size)"
        )
    setattr(model, "_pos_embed", types.MethodType(_pos_embed, model))  # shadows the class's method
    return model


# The _pos_embed implementations that _pos_embed above reproduces (prefix tokens, then resampled grid).
_REWRITTEN = (VisionTransformer._pos_embed, VisionTransformerDistilled._pos_embed)
