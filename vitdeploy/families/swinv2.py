"""timm SwinTransformerV2: shifted windows with log-spaced continuous position bias; dynamic with dynamic_img_size.

timm fixes each stage's window and shift at construction from `img_size` (a window never larger than
the stage's grid), so a model built at another size computes something else: the eager reference at
every size is the exported model itself (built at the export size, recorded as `opt_hw`), never one
rebuilt at that size. With `dynamic_img_size` it pads to whole windows and builds the attention masks
per input, which exports with symbolic sizes.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer_v2 import SwinTransformerV2Block
from torch import nn

from vitdeploy.families.base import register
from vitdeploy.families.swin import Swin


@register
class SwinV2(Swin):
    """Swin's test size and dynamic rule, and a random init that reaches every branch."""

    name = "swinv2"
    timm_classes = ("SwinTransformerV2",)

    def random_init(self, model: nn.Module, seed: int) -> None:
        """timm zeroes every block's res-post-norm weights (`_init_respostnorm`): each attention and MLP branch
        then adds nothing, and parity would not see them. Seeded random weights draw them from N(1, 0.2)."""
        generator = torch.Generator().manual_seed(seed)
        blocks = [module for module in model.modules() if isinstance(module, SwinTransformerV2Block)]  # stage order
        with torch.no_grad():
            for block in blocks:
                for norm in (block.norm1, block.norm2):
                    weight, bias = norm.get_parameter("weight"), norm.get_parameter("bias")
                    weight.copy_(1.0 + 0.2 * torch.randn(weight.shape, generator=generator))
                    bias.copy_(0.1 * torch.randn(bias.shape, generator=generator))
