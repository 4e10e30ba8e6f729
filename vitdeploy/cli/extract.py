"""`vitdeploy extract ARTIFACT IMAGES... -o OUT`: features of many images on Ray Data (vitdeploy.serve.extract)."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import Size, backend_option, precision_option, threads_option


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (shards, index.jsonl, extract.json); rerunning into it resumes.")
@click.option("--list", "lists", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A text file of image paths, one per line (repeatable).")
@click.option("--levels", help="Comma-separated outputs to write [default: all, e.g. block2,embedding].")
@click.option("--pool", is_flag=True, help="Average each feature map over height and width: [n, channels].")
@click.option("--size", type=Size(), help="HxW every image is resized to (dynamic artifacts) [default: the "
                                             "export size].")
@click.option("--shard-size", type=click.IntRange(1), default=256, show_default=True, help="Images per shard.")
@click.option("--actors", type=click.IntRange(1), default=1, show_default=True, help="Ray Data actors (models).")
@click.option("--batch", type=click.IntRange(1), help="Images per runtime call [default: 8, or the batch max].")
@backend_option()
@precision_option()
@threads_option(help="Runtime threads per actor [default: the CPUs / actors].")
@click.option("--address", help="Join the Ray cluster at this address [default: start a local one on loopback].")
@click.option("--force", is_flag=True, help="Replace an earlier extraction in OUT instead of resuming it.")
def extract(artifact: Path, images: tuple[Path, ...], out: Path, lists: tuple[Path, ...], levels: str | None,
            pool: bool, size: tuple[int, int] | None, shard_size: int, actors: int, batch: int | None,
            backend: str, precision: str | None, threads: int | None, address: str | None, force: bool) -> None:
    """Extract pyramid levels (or pooled features) of IMAGES (files, folders) with ARTIFACT into OUT."""
    from vitdeploy.serve.extract import INDEX_FILE, ExtractOptions, collect_images, extract as run_extract

    options = ExtractOptions(levels=tuple(levels.split(",")) if levels else (), pool=pool, size=size,
                             shard_size=shard_size, actors=actors, batch=batch, backend=backend, precision=precision,
                             threads=threads, address=address, force=force)
    summary = run_extract(artifact, collect_images(images, lists), out, options)
    shapes = ", ".join(f"{name} {shape}" for name, shape in summary.levels.items())
    skipped = f", {summary.skipped} already complete" if summary.skipped else ""
    click.echo(f"wrote {out}/: {summary.images} images in {summary.shards} shards ({summary.written} written now"
               f"{skipped}); {summary.extracted} extracted, {summary.unreadable} unreadable (listed in "
               f"{out / INDEX_FILE}); per image: {shapes}")
