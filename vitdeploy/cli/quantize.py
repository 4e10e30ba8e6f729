"""`vitdeploy quantize ARTIFACT --calibration FOLDER`: the name `vitdeploy build ARTIFACT --backend onnxruntime
--precision int8` had first, kept for the scripts that use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitdeploy.cli.build import build
from vitdeploy.cli.options import calibration_options


@click.command()
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@calibration_options
@click.pass_context
def quantize(ctx: click.Context, artifact_dir: Path, **int8: Any) -> None:
    """The same as `vitdeploy build ARTIFACT_DIR --backend onnxruntime --precision int8`: quantise ARTIFACT_DIR's
    ONNX to int8 (model.onnxruntime.int8.onnx + its .json description), written only if every level passes its
    gate on held-out photos; prints the gate per level and the file. Needs vitdeploy[export] (the eager
    reference of the gate)."""
    ctx.invoke(build, artifact_dir=artifact_dir, backend="onnxruntime", precision="int8", **int8)
