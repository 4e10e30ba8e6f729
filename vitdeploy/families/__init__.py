"""The backbone-family registry: one module per family declares what vitdeploy knows about it.

A family names the timm classes it covers and says how to treat them: the backbone it builds around
the timm model (SAM2: trunk + FPN neck) and how its weights load, the size rule, whether one graph can
serve several sizes (or why not), the export rewrites, the module exported and the eager reference
(at another size; SAM2: Meta's own encoder), and the reduced settings tests and `vitdeploy matrix
--small` use. Adding a family
is one module here (a `Family` subclass with `@register`, imported below) plus a recipe;
tests/test_families.py fails for a registered family that has no test recipe.
"""

from __future__ import annotations

from vitdeploy.errors import VitdeployError
from vitdeploy.families import (  # noqa: F401 (register)
    beit, convnext, eva, hiera, mvitv2, sam2, samvit, swin, swinv2, twins, vit)
from vitdeploy.families.base import REGISTRY, Family

__all__ = ["Family", "dynamic_families", "get", "names"]


def names() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> Family:
    if name not in REGISTRY:
        raise VitdeployError(f"unknown family {name!r}: expected one of {', '.join(names())}")
    return REGISTRY[name]


def dynamic_families() -> str:
    """The families that can export dynamic sizes, for error messages."""
    return ", ".join(name for name in names() if REGISTRY[name].fixed_only is None)
