"""`vitdeploy fixture RECIPE OUT --kind channels|massive`: an outlier fixture checkpoint
(vitdeploy.fixtures.outliers)."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import seed_option

KINDS = ("channels", "massive")  # vitdeploy.fixtures.outliers.KINDS, which imports torch: not at --help


@click.command()
@click.argument("recipe")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), required=True,
              help="channels: outlier LayerNorm channels, same function; massive: residual channels at --magnitude.")
@seed_option(help="Seed of the plain random weights.")
@click.option("--factor", type=float, default=40.0, show_default=True, help="channels: outliers vs the rest.")
@click.option("--magnitude", type=float, default=5e3, show_default=True, help="massive: added to the residual.")
def fixture(recipe: str, out: Path, kind: str, seed: int, factor: float, magnitude: float) -> None:
    """Write RECIPE's model (seeded random weights) as an outlier fixture checkpoint OUT (.safetensors), for
    `vitdeploy export RECIPE --checkpoint OUT`. Needs vitdeploy[export] (torch, timm)."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    from vitdeploy.fixtures.outliers import write_fixture

    changed = write_fixture(recipe, kind, out, seed=seed, factor=factor, magnitude=magnitude)
    click.echo(f"{out}: {kind} fixture of {recipe} (seed {seed}); changed {', '.join(changed)}")
