"""timm Hiera and HieraDet (SAM2's image-encoder trunk): hierarchical, strides 4..32."""

from __future__ import annotations

from timm.models.hiera import Hiera as TimmHiera
from torch import nn

from vitdeploy.adapters.hiera import adapt_hiera, hiera_size_multiple, hiera_supports_dynamic
from vitdeploy.families.base import Family, Rebuild, register


@register
class Hiera(Family):
    name = "hiera"
    timm_classes = ("Hiera", "HieraDet")
    small_kwargs = {"stages": [1, 1, 1, 1]}

    def size_multiple(self, model: nn.Module) -> int:
        return hiera_size_multiple(model)

    def dynamic_problem(self, model: nn.Module) -> str | None:
        if not hiera_supports_dynamic(model):
            return "its per-token position embedding holds one grid (dynamic sizes need an abswin Hiera or HieraDet)"
        return None

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        return adapt_hiera(model, dynamic)

    def reference_for_size(self, base: nn.Module, hw: tuple[int, int], rebuild: Rebuild) -> nn.Module:
        """A timm Hiera computes unroll/reroll and position-embedding sizes at construction: the reference at
        another size is the timm model created at that size with the same weights. HieraDet runs any size."""
        return rebuild(hw) if isinstance(base, TimmHiera) else base
