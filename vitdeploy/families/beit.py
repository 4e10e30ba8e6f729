"""timm Beit: relative-position bias tables for one size."""

from vitdeploy.families.base import Family, register


@register
class Beit(Family):
    name = "beit"
    timm_classes = ("Beit",)
    fixed_only = "timm's Beit asserts the input size it was built for"
    small_kwargs = {"depth": 4}
