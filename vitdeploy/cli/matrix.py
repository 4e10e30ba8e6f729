"""`vitdeploy matrix`: try every recipe (export, parity, engine build) and write the coverage table."""

from __future__ import annotations

import shlex
from pathlib import Path

import click



@click.command()
@click.option("--recipes", help="Comma-separated recipe names or .toml paths [default: every shipped recipe].")
@click.option("--small", is_flag=True, help="Fewer blocks and ~64 px inputs, so a CPU run takes minutes.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default="docs/coverage.md",
              show_default=True, help="Markdown file to write.")
@click.option("--gpu-results", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file of engine parity measured on a GPU: read for the table, and updated when this "
                   "machine has a GPU.")
def matrix(recipes: str | None, small: bool, output: Path, gpu_results: Path | None) -> None:
    """Export, verify (ONNX Runtime) and build (TensorRT-RTX) each recipe; write a markdown coverage matrix."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    from vitdeploy.tools.coverage import run_matrix
    from vitdeploy.recipes import available_recipes, load_recipe

    names = [name.strip() for name in recipes.split(",") if name.strip()] if recipes else available_recipes()
    loaded = [load_recipe(name) for name in names]
    args = ["vitdeploy", "matrix", *(["--recipes", recipes] if recipes else []), *(["--small"] if small else []),
            "--output", str(output), *(["--gpu-results", str(gpu_results)] if gpu_results else [])]
    command = shlex.join(args)
    results = run_matrix(loaded, small, output, command, gpu_results,
                         note=lambda message: click.echo(message, err=True))
    failed = [r.recipe for r in results for m in r.modes.values()
              if not (m.export.startswith("ok") and m.parity.startswith("pass") and m.engine.startswith("ok"))]
    click.echo(f"wrote {output} ({len(results)} recipes"
               + (f"; failing steps in: {', '.join(dict.fromkeys(failed))})" if failed else ")"))
