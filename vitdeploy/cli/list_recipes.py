"""`vitdeploy list`: the shipped recipes; with --pyramids, the outputs each exports (needs vitdeploy[export])."""

from __future__ import annotations

import click

from vitdeploy.recipes import Recipe, available_recipes, load_recipe


def _resolution(recipe: Recipe) -> str:
    h, w = recipe.input.size
    if not recipe.input.dynamic:
        return f"fixed {h}x{w}"
    (min_h, min_w), (max_h, max_w) = recipe.input.min, recipe.input.max
    return f"dynamic {min_h}x{min_w}..{max_h}x{max_w}"


def _pyramid(recipe: Recipe) -> str:
    """name:channels@stride per output, from the backbone built on torch's meta device (no weights)."""
    from vitdeploy import families
    from vitdeploy.models import describe_recipe_pyramid

    if recipe.unsupported:
        return f"not exportable: {recipe.unsupported}"
    outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                      recipe.pyramid, family=families.get(recipe.family),
                                      position_encodings=recipe.position_encodings)
    return " ".join(f"{o.name}:{o.channels}" + (f"@{o.stride}" if o.stride and not o.name.startswith("stride")
                                                else "") for o in outputs)


def list_timm(pattern: str) -> None:
    """timm models matching `pattern` (timm's wildcards) and the family each would take by name."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    import timm

    from vitdeploy.errors import VitdeployError
    from vitdeploy.timm_recipes import timm_entry

    names = timm.list_models(pattern)
    if not names:
        raise VitdeployError(f"no timm model matches '{pattern}' (timm {timm.__version__}): expected a pattern such "
                             "as 'resnet*' or '*dinov3*'")
    click.echo(f"{'timm model':<44} {'class':<24} {'family':<34} {'size':<9} dynamic H/W")
    for name in names:
        entry = timm_entry(name)
        click.echo(f"{name:<44} {entry.timm_class:<24} {entry.family:<34} {entry.size[0]}x{entry.size[1]:<5} "
                   f"{entry.dynamic}")


@click.command("list")
@click.option("--timm", "pattern", help="List timm models matching PATTERN (e.g. 'resnet*') with the family each "
                                        "would take and whether it exports dynamic sizes, instead of the recipes.")
@click.option("--pyramids", is_flag=True,
              help="Also show each recipe's outputs (name: channels@stride): builds every backbone on torch's meta "
                   "device, so it takes seconds and needs vitdeploy[export].")
def list_recipes(pattern: str | None, pyramids: bool) -> None:
    """Show the recipes: timm model, family and resolution; --pyramids adds their outputs; --timm lists timm models."""
    if pattern:
        list_timm(pattern)
        return
    if pyramids:
        from vitdeploy.optional import ensure_export
        ensure_export()
        click.echo(f"{'recipe':<24} {'timm model':<33} {'resolution':<24} outputs (name: channels@stride)")
    else:
        click.echo(f"{'recipe':<24} {'timm model':<33} {'family':<9} resolution")
    for name in available_recipes():
        recipe = load_recipe(name)
        if pyramids:
            click.echo(f"{name:<24} {recipe.timm_name:<33} {_resolution(recipe):<24} {_pyramid(recipe)}")
        else:
            unsupported = f"  (not exportable: {recipe.unsupported})" if recipe.unsupported else ""
            click.echo(f"{name:<24} {recipe.timm_name:<33} {recipe.family:<9} {_resolution(recipe)}{unsupported}")
