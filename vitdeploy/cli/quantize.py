"""`vitdeploy quantize ARTIFACT --calibration FOLDER`: the int8 graph, written only if every level passes its gate."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import LazyChoice


@click.command()
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--calibration", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of PNG/JPEG photos: the first --samples calibrate, the next --held-out judge the result.")
@click.option("--samples", type=int, default=32, show_default=True, help="Photos to calibrate on.")
@click.option("--held-out", type=int, default=4, show_default=True,
              help="Photos, after the calibration ones, to check every level against eager fp32.")
@click.option("--method", type=LazyChoice("vitdeploy.quantize:METHODS"), default="minmax", show_default=True,
              help="Calibration method.")
@click.option("--activations", type=LazyChoice("vitdeploy.quantize:ACTIVATIONS"), default="s8", show_default=True,
              help="s8: symmetric, runs in ONNX Runtime, OpenVINO and TensorRT; u8: faster in ONNX Runtime only.")
@click.option("--exclude", multiple=True, metavar="OP_OR_NODE",
              help="Keep float every node of this op type, or whose name matches this glob (repeat).")
@click.option("--dynamic", is_flag=True,
              help="Dynamic int8 (no calibration; ONNX Runtime only); --calibration then only supplies held-out photos.")
@click.option("--smooth", default="auto", show_default=True, metavar="auto|off|ALPHA",
              help="SmoothQuant: migrate activation outlier channels into the weights. auto: where calibration finds "
                   "outlier channels (alpha 0.5); ALPHA (0..1): on every quantised MatMul's input; off.")
def quantize(artifact_dir: Path, calibration: Path | None, samples: int, held_out: int, method: str, activations: str,
             exclude: tuple[str, ...], dynamic: bool, smooth: str) -> None:
    """Quantise ARTIFACT_DIR's ONNX to int8 (model.onnxruntime.int8.onnx + its .json description); prints the
    held-out gate per level and the file. Needs vitdeploy[export] (the eager reference of the gate)."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    from vitdeploy.quantize import gate_summary, quantize_artifact

    path, report = quantize_artifact(artifact_dir, calibration=calibration, samples=samples, held_out=held_out,
                                     method=method, activations=activations, exclude=exclude, dynamic=dynamic,
                                     smooth=smooth)
    if report is not None:
        summary, first = gate_summary(report), report.checks[0]
        click.echo(f"held out: {len(report.checks) // len(summary)} photos, every level passed its gate "
                   f"(min cosine {first.tol_min_cosine}, max rel_l2 {first.tol_max_rel_l2})")
        click.echo(f"{'level':<12} {'min cosine':>10} {'max rel_l2':>10}")
        for output, gate in summary.items():
            click.echo(f"{output:<12} {gate['min_cosine']:>10.6f} {gate['max_rel_l2']:>10.4f}")
    click.echo(path)
