"""timm MultiScaleVit (MViTv2): pooling attention with relative positions, fixed size."""

from vitdeploy.families.base import Family, register


@register
class MViTv2(Family):
    name = "mvitv2"
    timm_classes = ("MultiScaleVit",)
    fixed_only = "its relative-position pooling sizes become symbolic floats the ONNX exporter cannot translate"
    unreduced = "its depth comes from a config object (MultiScaleVitCfg), not a keyword a recipe can hold"
