"""`vitdeploy build`: an engine (TensorRT, TensorRT-RTX or OpenVINO) and its description, in an artifact."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import BUILDERS, backend_option, precision_option


@click.command("build")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@backend_option(BUILDERS, help="auto: full TensorRT on a GPU where installed, else TensorRT-RTX (refused on a GPU "
                               "that it does not support: A100, H100, H200); openvino: an IR for CPUs (fp32, bf16).")
@precision_option(default="fp32", help="The engine's precision.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="TensorRT: tactic timing cache to read and update, so a rebuild on this GPU is fast.")
@click.option("--fp32-op", "fp32_ops", multiple=True, metavar="OP_TYPE",
              help="TensorRT: ONNX op type kept in float32 at fp16/bf16 (repeat) [default: the normalisations, "
                   "Softmax, ReduceMean, Pow, Sqrt: vitdeploy.engine.precision.DEFAULT_FP32_OPS].")
@click.option("--target-gpu", is_flag=True,
              help="TensorRT-RTX: build for this machine's GPU only instead of a portable engine.")
def build(artifact_dir: Path, backend: str, precision: str, timing_cache: Path | None,
          fp32_ops: tuple[str, ...], target_gpu: bool) -> None:
    """Build an engine (model.<backend>.<precision>.engine, or .xml + .bin for OpenVINO) and its .json
    description in ARTIFACT_DIR; prints the engine path."""
    from vitdeploy import engine
    from vitdeploy.engine.precision import DEFAULT_FP32_OPS

    options = {}
    if backend != "openvino":
        options = {"timing_cache": timing_cache, "fp32_ops": fp32_ops or DEFAULT_FP32_OPS, "target_gpu": target_gpu}
    click.echo(engine.build(artifact_dir, backend, precision, **options).path)
