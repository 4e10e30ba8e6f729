"""`vitdeploy build`: an engine (TensorRT, TensorRT-RTX, OpenVINO, AOTInductor, or the ONNX Runtime int8 graph)
and its description, in an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from vitdeploy.cli.options import BUILDERS, backend_option, calibration_options, precision_option
from vitdeploy.errors import VitdeployError

if TYPE_CHECKING:
    from vitdeploy.engine import Engine


@click.command("build")
@click.argument("artifact_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@backend_option(BUILDERS, help="auto: full TensorRT on a GPU where installed, else TensorRT-RTX (refused on a GPU "
                               "that it does not support: A100, H100, H200); openvino: an IR for CPUs (fp32, bf16, "
                               "int8 from the int8 graph); aoti: torch.export + AOTInductor, a .pt2 package for this "
                               "CPU or GPU (fp32, bf16); onnxruntime: the int8 graph, calibrated on --calibration "
                               "photos and gated on held-out ones (int8; needs vitdeploy[export]).")
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
@calibration_options
@click.pass_context
def build(ctx: click.Context, artifact_dir: Path, backend: str, precision: str, timing_cache: Path | None,
          fp32_ops: tuple[str, ...], target_gpu: bool, device: str, **int8: Any) -> None:
    """Build an engine (model.<backend>.<precision>.engine, .xml + .bin for OpenVINO, .pt2 for AOTInductor,
    .onnx for the ONNX Runtime int8 graph) and its .json description in ARTIFACT_DIR; prints the engine path
    (and, for the int8 graph, its held-out gate per level)."""
    from vitdeploy import engine
    from vitdeploy.engine.precision import DEFAULT_FP32_OPS
    from vitdeploy.optional import require

    options: dict[str, Any] = {}
    if backend == "onnxruntime":
        options = int8
    elif given := [name for name in int8 if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]:
        raise VitdeployError(f"--{given[0].replace('_', '-')} with --backend {backend}: expected --backend onnxruntime "
                             "--precision int8, the int8 graph that the OpenVINO and TensorRT int8 engines are then "
                             "built from")
    elif backend == "aoti":
        if device == "auto":
            device = "cuda" if require("torch").cuda.is_available() else "cpu"
        options = {"device": device}
    elif backend != "openvino":
        options = {"timing_cache": timing_cache, "fp32_ops": fp32_ops or DEFAULT_FP32_OPS, "target_gpu": target_gpu}
    built = engine.build(artifact_dir, backend, precision, **options)
    if built.backend == "onnxruntime":
        echo_gates(built)
    click.echo(built.path)


def echo_gates(built: Engine) -> None:
    """The int8 graph's held-out gate per level, as its description records it."""
    quantization = built.section.quantization or {}
    if not quantization.get("gates"):
        return  # dynamic int8 quantised without photos: no gate ran
    tolerance = built.description.tolerance["int8"]
    click.echo(f"held out: {len(quantization['held_out'])} photos, every level passed its gate (min cosine "
               f"{tolerance.min_cosine}, max rel_l2 {tolerance.max_rel})")
    click.echo(f"{'level':<12} {'min cosine':>10} {'max rel_l2':>10}")
    for output, gate in quantization["gates"].items():
        click.echo(f"{output:<12} {gate['min_cosine']:>10.6f} {gate['max_rel_l2']:>10.4f}")
