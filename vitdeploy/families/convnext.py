"""timm ConvNeXt: convolutional, runs at any size."""

from vitdeploy.families.base import Family, register


@register
class ConvNeXt(Family):
    name = "convnext"
    timm_classes = ("ConvNeXt",)
    small_kwargs = {"depths": [1, 1, 1, 1]}
