"""timm SwinTransformer: shifted windows; dynamic with dynamic_img_size."""

from __future__ import annotations

from torch import nn

from vitdeploy.families.base import Family, needs_dynamic_img_size, register


@register
class Swin(Family):
    name = "swin"
    timm_classes = ("SwinTransformer",)
    small_kwargs = {"depths": [2, 1, 1, 1]}  # two blocks keep the first stage's shifted windows

    def dynamic_problem(self, model: nn.Module) -> str | None:
        return needs_dynamic_img_size(model)
