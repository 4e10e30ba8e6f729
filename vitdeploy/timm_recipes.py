"""Recipes inferred from a bare timm model name: `vitdeploy export TIMM_NAME` without a recipe file.

The family comes from the model's class (`families.for_class`: the most specific registered class wins,
else the generic family), the input size, mean and std from timm's pretrained_cfg, the default outputs
from feature_info (`models.default_outputs`). The recipe's `inferred` says what came from where; the
artifact records it, with `recipe: null`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitdeploy import families
from vitdeploy.errors import VitdeployError
from vitdeploy.models import class_accepts
from vitdeploy.pyramid import default_outputs, feature_levels
from vitdeploy.recipes import DEFAULT_BATCH, DEFAULT_TOLERANCE, Recipe, RecipeInput, available_recipes, is_recipe, \
    load_recipe

RANGE = (0.5, 1.5)  # a dynamic export's default range, as fractions of the export size


def unknown_name(name: str) -> VitdeployError:
    """One line naming the closest shipped recipes and timm models."""
    close = difflib.get_close_matches(name, available_recipes() + timm.list_models(), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return VitdeployError(f"'{name}' is neither a recipe nor a timm model (timm {timm.__version__}): {hint}expected "
                          "a recipe from `vitdeploy list`, a .toml path, or a name from `vitdeploy list --timm PATTERN`")


def meta_model(timm_name: str, timm_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The timm model on the meta device (no memory, no weights): its class, feature_info and pretrained_cfg."""
    if not timm.is_model(timm_name):
        raise unknown_name(timm_name)
    try:
        with torch.device("meta"):
            return timm.create_model(timm_name, **(timm_kwargs or {}))
    except TypeError as exc:
        raise VitdeployError(f"cannot build {timm_name} with {sorted(timm_kwargs or {})}: {exc}; expected only "
                             "arguments its timm class takes") from None


@dataclass(frozen=True)
class TimmEntry:
    """What `vitdeploy list --timm` shows of one timm model."""

    timm_name: str
    timm_class: str
    family: str  # or why it has none
    dynamic: str  # yes / probed at export / no: why
    size: tuple[int, int]


@lru_cache(maxsize=None)
def timm_entry(timm_name: str) -> TimmEntry:
    model = meta_model(timm_name)
    pretrained_cfg: dict[str, Any] = getattr(model, "pretrained_cfg", {})  # set by timm at creation
    size = tuple(pretrained_cfg.get("input_size", (3, 224, 224))[1:])
    try:
        family = families.for_class(type(model), timm_name)
    except VitdeployError:
        return TimmEntry(timm_name, type(model).__name__, "none (no forward_intermediates)", "-", size)
    if family.probe_dynamic:
        dynamic = "probed at export"
    elif family.fixed_only:
        dynamic = "no"
    else:
        dynamic = "yes" if family.dynamic_problem(_dynamic_build(timm_name, model)) is None else "no"
    return TimmEntry(timm_name, type(model).__name__, family.name, dynamic, size)


def _dynamic_build(timm_name: str, model: nn.Module) -> nn.Module:
    """The meta model built as a dynamic export builds it (with dynamic_img_size where its class takes it)."""
    return meta_model(timm_name, _dynamic_kwargs(model, {}))


def _dynamic_kwargs(model: nn.Module, timm_kwargs: dict[str, Any]) -> dict[str, Any]:
    if class_accepts(type(model), "dynamic_img_size") and "dynamic_img_size" not in timm_kwargs:
        return {**timm_kwargs, "dynamic_img_size": True}
    return timm_kwargs


def _round(value: float, multiple: int) -> int:
    return multiple * max(1, round(value / multiple))


def recipe_from_timm(timm_name: str, timm_kwargs: dict[str, Any] | None = None, size: tuple[int, int] | None = None,
                     dynamic: bool = False) -> Recipe:
    """A recipe for a timm model no recipe names. Export size: `size`, else pretrained_cfg's input size (to the
    nearest multiple of the size rule); the dynamic range 0.5x..1.5x of it; dynamic_img_size where the class
    takes it and `dynamic` is asked for."""
    kwargs = dict(timm_kwargs or {})
    model = meta_model(timm_name, kwargs)
    family = families.for_class(type(model), timm_name)
    if dynamic:
        kwargs = _dynamic_kwargs(model, kwargs)
        model = meta_model(timm_name, kwargs)
    levels = feature_levels(model, timm_name)
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg")
    multiple = family.size_multiple(family.assemble(model))
    cfg_hw = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224))[1:])
    height, width = size or (_round(cfg_hw[0], multiple), _round(cfg_hw[1], multiple))
    lo = (_round(height * RANGE[0], multiple), _round(width * RANGE[0], multiple))
    hi = (max(height, _round(height * RANGE[1], multiple)), max(width, _round(width * RANGE[1], multiple)))
    lo = (min(lo[0], height), min(lo[1], width))
    mean, std = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    matched = next(c.__name__ for c in type(model).__mro__ if c.__name__ in family.timm_classes) \
        if family.timm_classes else None
    inferred = {
        "timm_class": f"{type(model).__module__}.{type(model).__name__}",
        "family": f"{family.name}: " + (f"registered for class {matched}" if matched else
                                        "no family names the class, which has forward_intermediates"),
        "size": f"{height}x{width} " + ("from --size" if size else f"from pretrained_cfg input_size "
                                        f"{list(cfg.get('input_size', []))} (multiples of {multiple})"),
        "normalization": f"mean and std from pretrained_cfg ({cfg.get('hf_hub_id') or cfg.get('architecture')})",
        "outputs": f"feature_info: default levels {list(default_outputs(levels))} of {len(levels)}",
        "timm_kwargs_added": sorted(set(kwargs) - set(timm_kwargs or {})),
    }
    return Recipe(name=timm_name, path=Path(timm_name), timm_name=timm_name, family=family.name,
                  description=f"inferred from timm {timm.__version__} (no recipe)", outputs=None, embedding=False,
                  input=RecipeInput(mode="dynamic" if dynamic else "fixed", size=(height, width), min=lo, max=hi,
                                  batch=DEFAULT_BATCH),
                  timm_kwargs=kwargs, mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]),
                  tolerance=dict(DEFAULT_TOLERANCE), inferred=inferred)


def resolve(name: str, timm_kwargs: dict[str, Any] | None = None, size: tuple[int, int] | None = None,
            dynamic: bool = False) -> Recipe:
    """A shipped recipe or recipe file by its name or path; otherwise a recipe inferred from the timm name."""
    if is_recipe(name):
        recipe = load_recipe(name)
        return replace(recipe, timm_kwargs={**recipe.timm_kwargs, **timm_kwargs}) if timm_kwargs else recipe
    if not timm.is_model(name):
        raise unknown_name(name)
    return recipe_from_timm(name, timm_kwargs, size, dynamic)

