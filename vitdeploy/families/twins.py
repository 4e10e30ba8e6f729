"""timm Twins (SVT): local and global sub-sampled attention; runs at any size (windows padded at run time)."""

from __future__ import annotations

from torch import nn

from vitdeploy.families.base import Family, register, unfuse_attention


@register
class Twins(Family):
    name = "twins"
    timm_classes = ("Twins",)
    small_kwargs = {"depths": [2, 1, 1, 1]}  # two blocks keep the first stage's global attention (second of a pair)

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        unfuse_attention(model)  # its local windows call a 5-D fused attention
        return model
