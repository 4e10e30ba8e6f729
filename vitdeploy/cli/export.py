"""`vitdeploy export RECIPE`: an ONNX artifact directory with the pyramid description inside."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.artifact import load_artifact
from vitdeploy.cli.options import IntList
from vitdeploy.engine.backend import CHOICES, resolve_backend
from vitdeploy.engine.precision import PRECISIONS
from vitdeploy.errors import VitdeployError
from vitdeploy.export import ExportOptions, export_artifact
from vitdeploy.inputs import layout_shape, pixels_in_graph
from vitdeploy.models import Weights
from vitdeploy.recipes import load_recipe


def _weights(checkpoint: Path | None, pretrained: bool, seed: int) -> Weights:
    if checkpoint and pretrained:
        raise VitdeployError("--checkpoint and --pretrained both given: choose one source of weights")
    if checkpoint:
        return Weights("checkpoint", seed, checkpoint)
    return Weights("pretrained" if pretrained else "random", seed)


@click.command()
@click.argument("recipe")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Artifact directory [default: artifacts/RECIPE].")
@click.option("--outputs", type=IntList(), help="Feature indices, e.g. 0,1,2,3 (Hiera stages, ViT blocks).")
@click.option("--embedding/--no-embedding", default=None, help="Add the pooled pre-logits embedding output.")
@click.option("--dynamic/--fixed", default=None, help="Dynamic height/width (recipe range) or the fixed size.")
@click.option("--size", type=IntList(2), help="Export size H,W [default: the recipe's].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Local weights: .safetensors or a torch state dict.")
@click.option("--pretrained", is_flag=True, help="timm's pretrained weights (needs the model hub).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--bake-preprocessing", is_flag=True,
              help="Take uint8 NHWC RGB pixels and normalise them in the graph (mean/std of the artifact).")
@click.option("--external-data", is_flag=True,
              help="Keep the weights in model.onnx.data beside model.onnx (always done above 2 GB).")
@click.option("--engine", is_flag=True, help="Also build a TensorRT / TensorRT-RTX engine (as `vitdeploy build`).")
@click.option("--backend", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Engine backend with --engine.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Engine precision with --engine.")
def export(recipe: str, out_dir: Path | None, outputs: tuple[int, ...] | None, embedding: bool | None,
           dynamic: bool | None, size: tuple[int, int] | None, checkpoint: Path | None, pretrained: bool,
           seed: int, force: bool, bake_preprocessing: bool, external_data: bool, engine: bool, backend: str, precision: str) -> None:
    """Export RECIPE (a name from `vitdeploy list` or a .toml path) to ONNX."""
    loaded = load_recipe(recipe)
    if engine:
        resolve_backend(backend)  # a missing TensorRT is an error before a long export, not after
    out_dir = out_dir or Path("artifacts") / loaded.name
    options = ExportOptions(outputs=outputs, embedding=embedding, dynamic=dynamic, size=size,
                            weights=_weights(checkpoint, pretrained, seed), force=force,
                            bake_preprocessing=bake_preprocessing, external_data=external_data)
    export_artifact(loaded, out_dir, options)
    artifact = load_artifact(out_dir)
    spec = artifact.input
    size_rule = (f"{spec['min_hw'][0]}x{spec['min_hw'][1]}..{spec['max_hw'][0]}x{spec['max_hw'][1]}, "
                 f"multiples of {spec['size_multiple']}" if artifact.dynamic
                 else f"{spec['opt_hw'][0]}x{spec['opt_hw'][1]}")
    onnx_mib = sum(f["size_bytes"] for f in artifact.meta["export"]["files"].values()) / 2**20
    click.echo(f"wrote {out_dir}/ ({onnx_mib:.1f} MiB ONNX in {', '.join(artifact.meta['export']['files'])}, "
               f"export {artifact.meta['export']['seconds']:.1f}s)")
    shape = ", ".join(map(str, layout_shape(spec, "B", "H", "W")))
    values = "RGB pixels, normalised in the graph" if pixels_in_graph(spec) else "normalised"
    click.echo(f"input  {spec['name']}: [{shape}] {spec['dtype']} ({values}), H x W = {size_rule}, batch "
               f"{spec['batch']['min']}..{spec['batch']['max']}")
    for output in artifact.outputs:
        shape = ("[B, {channels}, H/{stride}, W/{stride}]" if output["kind"] == "feature"
                 else "[B, {channels}]").format(**output)
        click.echo(f"output {output['name']}: {shape}")
    if engine:
        from vitdeploy.engine.build import build_engine

        click.echo(f"engine {build_engine(out_dir, backend, precision)}")
