"""timm Eva (EVA-02): ViT-like with rotary embeddings; dynamic with dynamic_img_size."""

from __future__ import annotations

from torch import nn

from vitdeploy.adapters.eva import adapt_eva
from vitdeploy.families.base import Family, needs_dynamic_img_size, register


@register
class Eva(Family):
    name = "eva"
    timm_classes = ("Eva",)
    small_kwargs = {"depth": 4}

    def dynamic_problem(self, model: nn.Module) -> str | None:
        return needs_dynamic_img_size(model)

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        return adapt_eva(model, dynamic)
