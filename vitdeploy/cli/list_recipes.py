"""`vitdeploy list`: the shipped recipes and their pyramids."""

from __future__ import annotations

import click

from vitdeploy.models import describe_recipe_pyramid
from vitdeploy.recipes import available_recipes, load_recipe


def _resolution(recipe) -> str:
    h, w = recipe.input.size
    if not recipe.input.dynamic:
        return f"fixed {h}x{w}"
    (min_h, min_w), (max_h, max_w) = recipe.input.min, recipe.input.max
    return f"dynamic {min_h}x{min_w}..{max_h}x{max_w}"


@click.command("list")
def list_recipes() -> None:
    """Show the recipes with their pyramid (channels@stride per output)."""
    click.echo(f"{'recipe':<24} {'timm model':<33} {'resolution':<24} outputs (name: channels@stride)")
    for name in available_recipes():
        recipe = load_recipe(name)
        if recipe.unsupported:
            pyramid = f"not exportable: {recipe.unsupported}"
        else:
            outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                              recipe.pyramid, family=recipe.family,
                                              position_encodings=recipe.position_encodings)
            pyramid = " ".join(f"{o.name}:{o.channels}" + (
                f"@{o.stride}" if o.stride and not o.name.startswith("stride") else "") for o in outputs)
        click.echo(f"{name:<24} {recipe.timm_name:<33} {_resolution(recipe):<24} {pyramid}")
