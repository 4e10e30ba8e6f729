"""`vitdeploy bench-sam2 ARTIFACT...`: SAM2 encoder latency and decoder time per prompt, per runtime (CPU)."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import backend_option, threads_option


@click.command(name="bench-sam2")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="PNG or JPEG photo to time on.")
@backend_option(default=("onnxruntime_cpu", "openvino"), multiple=True,
                help="Runtimes to time (repeatable), as vitdeploy.load takes them; OpenVINO uses the artifact's "
                     "engines if built.")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--iterations", type=int, default=5, show_default=True, help="Timed calls; the median is reported.")
@threads_option(help="Intra-op threads of each runtime [default: theirs].")
def bench_sam2_command(artifacts: tuple[Path, ...], image: Path, backends: tuple[str, ...], warmup: int,
                       iterations: int, threads: int | None) -> None:
    """Time SAM2 artifacts exported with --decoder: set_image (encoder) and predict per prompt kind (decoder)."""
    from vitdeploy.sam2.bench import bench_sam2, format_rows
    from vitdeploy.sam2.imaging import load_rgb

    photo = load_rgb(image)
    rows = [row for artifact in artifacts
            for row in bench_sam2(artifact, list(backends), photo, warmup, iterations, threads)]
    click.echo(format_rows(rows))
