"""Any timm class with `forward_intermediates` that no other family claims (ResNet, EfficientNet, RegNet,
MobileNetV5, MetaFormers, ...): timm's own feature API exported as it is.

Nothing about such a class is known ahead, so its size rule is the one every family has (multiples of
each feature stride), its only rewrites are model-independent ones (timm's unfused attention, which the
ONNX exporter takes at any rank), and whether one graph serves several sizes is not assumed: a dynamic
export is run in ONNX Runtime at sizes other than the export size before it ships
(vitdeploy.export.onnx_export), and a graph that baked its export size in is refused with the reason.
"""

from __future__ import annotations

from torch import nn

from vitdeploy.errors import VitdeployError
from vitdeploy.families import claimed_by
from vitdeploy.families.base import Family, register, unfuse_attention


@register
class Generic(Family):
    name = "generic"
    timm_classes = ()
    probe_dynamic = True
    unreduced = ("its classes name their depth differently (depth, depths, layers, ...): vitdeploy.coverage "
                 "reduces what a class's signature names")

    def check(self, model: nn.Module) -> None:
        """Any class with timm's feature API, unless a specific family claims it (its rewrites are needed)."""
        claimed = claimed_by(type(model))
        if claimed is not None:
            raise VitdeployError(f"family 'generic' expects a timm class no other family claims, got a "
                                 f"{type(model).__name__}: set the recipe's family to '{claimed.name}'")
        if not callable(getattr(model, "forward_intermediates", None)):
            raise VitdeployError(f"family 'generic' expects a timm class with forward_intermediates, got a "
                                 f"{type(model).__name__}, which has none: it has no feature pyramid to export")

    def dynamic_problem(self, model: nn.Module) -> str | None:
        if getattr(model, "dynamic_img_size", None) is False:  # ViT-like: position embeddings for one grid
            return "it was built without dynamic_img_size (set timm_kwargs dynamic_img_size = true)"
        return None

    def adapt(self, model: nn.Module, dynamic: bool) -> nn.Module:
        unfuse_attention(model)  # fused attention of rank 3 or 5 is not taken by the ONNX exporter
        return model
