"""`vitdeploy matrix`: try every recipe (export, parity, engine build) and write the coverage table."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from vitdeploy.cli.options import IntList


@click.command()
@click.option("--recipes", help="Comma-separated recipe names or .toml paths [default: every shipped recipe].")
@click.option("--small", is_flag=True, help="Fewer blocks and ~64 px inputs, so a CPU run takes minutes.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default="docs/coverage.md",
              show_default=True, help="Markdown file to write.")
@click.option("--gpu-results", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file of engine parity measured on a GPU: read for the table, and updated when this "
                   "machine has a GPU.")
@click.option("--timm", "timm_names", help="Comma-separated timm model names, exported without a recipe (as "
                                          "`vitdeploy export TIMM_NAME`), instead of recipes.")
@click.option("--sweep", is_flag=True, help="The timm models of docs/backbones.md (vitdeploy.tools.coverage.SWEEP).")
@click.option("--fixed-only", is_flag=True, help="With --timm/--sweep: skip the dynamic export.")
@click.option("--shard", type=IntList(2), help="K,N with --sweep: every N-th model from the K-th (1-based), so N "
                                                "processes share a sweep.")
def matrix(recipes: str | None, small: bool, output: Path, gpu_results: Path | None, timm_names: str | None,
           sweep: bool, fixed_only: bool, shard: tuple[int, int] | None) -> None:
    """Export, verify (ONNX Runtime) and build (TensorRT-RTX) each recipe; write a markdown coverage matrix."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    from vitdeploy.tools.coverage import run_matrix
    from vitdeploy.recipes import available_recipes, load_recipe

    if timm_names or sweep:
        from vitdeploy.tools.coverage import SWEEP, run_sweep, sweep_passed

        names = [n.strip() for n in timm_names.split(",") if n.strip()] if timm_names else list(SWEEP)
        if shard:
            names = names[shard[0] - 1::shard[1]]
        args = ["vitdeploy", "matrix", *(["--timm", timm_names] if timm_names else ["--sweep"]),
                *(["--shard", f"{shard[0]},{shard[1]}"] if shard else []),
                *(["--small"] if small else []), *(["--fixed-only"] if fixed_only else []), "--output", str(output)]
        results = run_sweep(names, small, ("fixed",) if fixed_only else ("fixed", "dynamic"), output,
                            shlex.join(args), note=lambda message: click.echo(message, err=True))
        passed = sum(sweep_passed(r) for r in results)
        click.echo(f"wrote {output} ({passed} of {len(results)} timm models export and verify at a fixed size)")
        return
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
