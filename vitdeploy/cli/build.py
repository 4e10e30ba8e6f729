"""`vitdeploy build`: an engine (TensorRT, TensorRT-RTX, OpenVINO or AOTInductor) and its description, in an
artifact."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import BUILDERS, backend_option, precision_option


@click.command("build")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@backend_option(BUILDERS, help="auto: full TensorRT on a GPU where installed, else TensorRT-RTX (refused on a GPU "
                               "that it does not support: A100, H100, H200); openvino: an IR for CPUs (fp32, bf16); aoti: "
                               "torch.export + AOTInductor, a .pt2 package for this CPU or GPU (fp32, bf16).")
@precision_option(default="fp32", help="The engine's precision.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="TensorRT: tactic timing cache to read and update, so a rebuild on this GPU is fast.")
@click.option("--fp32-op", "fp32_ops", multiple=True, metavar="OP_TYPE",
              help="TensorRT: ONNX op type kept in float32 at fp16/bf16 (repeat) [default: the normalisations, "
                   "Softmax, ReduceMean, Pow, Sqrt: vitdeploy.engine.precision.DEFAULT_FP32_OPS].")
@click.option("--target-gpu", is_flag=True,
              help="TensorRT-RTX: build for this machine's GPU only instead of a portable engine.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="aoti: the device the package is compiled for (auto: cuda when torch sees a GPU).")
def build(artifact_dir: Path, backend: str, precision: str, timing_cache: Path | None,
          fp32_ops: tuple[str, ...], target_gpu: bool, device: str) -> None:
    """Build an engine (model.<backend>.<precision>.engine, .xml + .bin for OpenVINO, .pt2 for AOTInductor) and
    its .json description in ARTIFACT_DIR; prints the engine path."""
    from vitdeploy import engine
    from vitdeploy.engine.precision import DEFAULT_FP32_OPS
    from vitdeploy.optional import require

    options: dict[str, object] = {}
    if backend == "aoti":
        if device == "auto":
            device = "cuda" if require("torch").cuda.is_available() else "cpu"
        options = {"device": device}
    elif backend != "openvino":
        options = {"timing_cache": timing_cache, "fp32_ops": fp32_ops or DEFAULT_FP32_OPS, "target_gpu": target_gpu}
    click.echo(engine.build(artifact_dir, backend, precision, **options).path)
