"""Plain timm VisionTransformer (ViT, DeiT-III, DINOv2 with registers): single-scale, patch-size rule."""

from __future__ import annotations

import math

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitdeploy.adapters.vit import adapt_vit
from vitdeploy.errors import VitdeployError
from vitdeploy.families.base import Family, needs_dynamic_img_size, register


@register
class ViT(Family):
    name = "vit"
    timm_classes = ("VisionTransformer",)
    small_kwargs = {"depth": 4}  # four blocks keep the default four outputs

    def size_multiple(self, model: nn.Module) -> int:
        """Input height and width must be multiples of the patch size (no dynamic padding)."""
        if not isinstance(model, VisionTransformer):
            raise VitdeployError(f"family 'vit' got a {type(model).__name__}; expected a timm VisionTransformer")
        return math.lcm(*model.patch_embed.patch_size)

    def dynamic_problem(self, model: nn.Module) -> str | None:
        return needs_dynamic_img_size(model)

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        return adapt_vit(model, dynamic)

    def attention_shape(self, model: nn.Module) -> tuple[int, int]:
        if isinstance(model, VisionTransformer):
            heads: int = getattr(model.blocks[0].attn, "num_heads")  # timm's blocks are typed as plain Modules
            return heads, model.embed_dim
        return 0, 0
