"""The backbone-family registry: one module per family declares what vitdeploy knows about it.

A family names the timm classes it covers and says how to treat them: the backbone it builds around
the timm model (SAM2: trunk + FPN neck) and how its weights load, the size rule, whether one graph can
serve several sizes (or why not), the export rewrites, the module exported and the eager reference
(at another size; SAM2: Meta's own encoder), and the reduced settings tests and `vitdeploy matrix
--small` use. A timm class no family names takes the `generic` family (any class with
forward_intermediates). Adding a family
is one module here (a `Family` subclass with `@register`, named after the family and listed in
`MODULES`) plus a recipe; tests/test_families.py fails for a registered family that has no test recipe.

The family modules import torch and timm: they are imported on the first `get`, so that reading a recipe
(`vitdeploy list`, a runtime install) checks its family's name without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vitdeploy.errors import VitdeployError

if TYPE_CHECKING:
    from vitdeploy.families.base import Family

__all__ = ["MODULES", "claimed_by", "dynamic_families", "for_class", "get", "names", "registry"]

MODULES = ("beit", "convnext", "eva", "gemma4", "generic", "hiera", "mvitv2", "naflexvit", "sam2", "samvit", "swin",
           "swinv2", "twins", "vit")


def registry() -> dict[str, Family]:
    """Every family by name, their modules imported (torch and timm with them)."""
    for module in MODULES:
        importlib.import_module(f"vitdeploy.families.{module}")
    from vitdeploy.families.base import REGISTRY
    return REGISTRY


def names() -> list[str]:
    """The family names, without importing the families (each module registers the family it is named after)."""
    return sorted(MODULES)


def get(name: str) -> Family:
    if name not in MODULES:
        raise VitdeployError(f"unknown family {name!r}: expected one of {', '.join(names())}")
    return registry()[name]


def dynamic_families() -> str:
    """The families that can export dynamic sizes, for error messages."""
    return ", ".join(name for name, family in sorted(registry().items()) if family.fixed_only is None)


def claimed_by(cls: type) -> Family | None:
    """The family that names `cls` or its closest base class (the most specific registered class wins);
    None when none does. Families that only a recipe picks (SAM2) are left out."""
    for base in cls.__mro__:
        for family in registry().values():
            if base.__name__ in family.timm_classes and family.recipe_only is None:
                return family
    return None


def for_class(cls: type, timm_name: str) -> Family:
    """The family a bare timm name takes: the one registered for its class or closest base class, else the
    generic family for any class with forward_intermediates."""
    claimed = claimed_by(cls)
    if claimed is not None:
        return claimed
    if not callable(getattr(cls, "forward_intermediates", None)):
        raise VitdeployError(f"timm model '{timm_name}' ({cls.__name__}) has no forward_intermediates, so it has no "
                             "feature pyramid to export: expected a backbone class that implements it (find one "
                             "with `vitdeploy list --timm PATTERN`)")
    return registry()["generic"]
