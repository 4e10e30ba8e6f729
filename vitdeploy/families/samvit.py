"""timm VisionTransformerSAM (SAM's ViT image encoder): windowed and global attention, fixed size."""

from __future__ import annotations

from torch import nn

from vitdeploy.adapters.samvit import adapt_samvit
from vitdeploy.families.base import Family, register, unfuse_attention


@register
class SamViT(Family):
    name = "samvit"
    timm_classes = ("VisionTransformerSAM",)
    fixed_only = ("torch.export fixes its relative-position table resizing at the export size (the graph fails "
                  "in ONNX Runtime at other sizes)")
    small_kwargs = {"depth": 4, "global_attn_indexes": [1, 3]}  # one windowed and one global block per pair

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        adapt_samvit(model)
        unfuse_attention(model)  # its fused attention is 3-D (batch * heads)
        return model
