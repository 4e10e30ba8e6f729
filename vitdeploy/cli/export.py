"""`vitdeploy export RECIPE`: an ONNX artifact directory with the pyramid description inside."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vitdeploy.cli.options import BUILDERS, IntList, KeyValue, Size, backend_option, precision_option, seed_option
from vitdeploy.errors import VitdeployError
from vitdeploy.description import PYRAMID_KINDS, PyramidSpec
from vitdeploy.sam2.graph import DECODER_DESCRIPTION, DECODER_FILE

if TYPE_CHECKING:
    from vitdeploy.models import Weights


def _weights(checkpoint: Path | None, pretrained: bool, seed: int) -> Weights:
    from vitdeploy.models import Weights

    if checkpoint and pretrained:
        raise VitdeployError("--checkpoint and --pretrained both given: choose one source of weights")
    if checkpoint:
        return Weights("checkpoint", seed, checkpoint)
    return Weights("pretrained" if pretrained else "random", seed)


def _pyramid(kind: str | None, strides: tuple[int, ...] | None) -> PyramidSpec | None:
    """--pyramid / --pyramid-strides as an override of the recipe's [pyramid] (None: keep the recipe's)."""
    if kind == "none":
        from vitdeploy.export.onnx_export import NO_PYRAMID
        if strides:
            raise VitdeployError("--pyramid-strides given with --pyramid none: expected --pyramid simple")
        return NO_PYRAMID
    if kind is None:
        if strides:
            raise VitdeployError("--pyramid-strides given without --pyramid: expected --pyramid simple")
        return None
    if strides and (list(strides) != sorted(set(strides)) or min(strides) < 1):
        raise VitdeployError(f"--pyramid-strides {','.join(map(str, strides))}: expected distinct positive strides "
                             "in increasing order")
    return PyramidSpec(kind=kind, strides=tuple(strides or ()))  # () : the default for the block stride


@click.command()
@click.argument("recipe", metavar="RECIPE|TIMM_NAME")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Artifact directory [default: artifacts/RECIPE].")
@click.option("--outputs", type=IntList(), help="Feature indices, e.g. 0,1,2,3 (Hiera stages, ViT blocks).")
@click.option("--embedding/--no-embedding", default=None, help="Add the pooled pre-logits embedding output.")
@click.option("--position-encodings/--no-position-encodings", default=None,
              help="SAM2: add each level's position encoding as an output pos_stride{s} [default: the recipe's].")
@click.option("--decoder", is_flag=True,
              help="SAM2: also export its prompt encoder + mask decoder (decoder.onnx) from --checkpoint, for "
                   "vitdeploy.sam2.Predictor, serve's /sam2 route and the C++ demo's prompts (needs vitdeploy[sam2]).")
@click.option("--dynamic/--fixed", default=None, help="Dynamic height/width (recipe range) or the fixed size.")
@click.option("--size", type=Size(), help="Export size HxW [default: the recipe's].")
@click.option("--pyramid", type=click.Choice(["none", *PYRAMID_KINDS]),
              help="simple: resample a single-scale backbone's blocks to strides in the graph (ViTDet-style, no "
                   "weights); none: the backbone's own levels [default: the recipe's].")
@click.option("--pyramid-strides", type=IntList(),
              help="Strides of --pyramid simple [default: 4,8,16,32 for a patch-16 ViT, 7,14,28,56 for patch 14].")
@click.option("--timm-kwarg", "timm_kwargs", type=KeyValue(), multiple=True,
              help="A timm constructor argument KEY=VALUE (TOML value), e.g. depth=4; repeatable.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Local weights: .safetensors or a torch state dict.")
@click.option("--pretrained", is_flag=True, help="timm's pretrained weights (needs the model hub).")
@seed_option(help="Seed of random weights.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--bake-preprocessing", is_flag=True,
              help="Take uint8 NHWC RGB pixels and normalise them in the graph (mean/std of the artifact).")
@click.option("--external-data", is_flag=True,
              help="Keep the weights in model.onnx.data beside model.onnx (always done above 2 GB).")
@click.option("--engine", "build_engine", is_flag=True, help="Also build an engine (as `vitdeploy build`).")
@backend_option(BUILDERS, help="Engine backend with --engine.")
@precision_option(default="fp32", help="Engine precision with --engine.")
def export(recipe: str, out_dir: Path | None, outputs: tuple[int, ...] | None, embedding: bool | None,
           position_encodings: bool | None, decoder: bool, dynamic: bool | None, size: tuple[int, int] | None,
           pyramid: str | None, pyramid_strides: tuple[int, ...] | None, timm_kwargs: tuple[tuple[str, Any], ...],
           checkpoint: Path | None, pretrained: bool, seed: int, force: bool,
           bake_preprocessing: bool, external_data: bool, build_engine: bool, backend: str, precision: str) -> None:
    """Export RECIPE (a name from `vitdeploy list` or a .toml path) or any TIMM_NAME with forward_intermediates
    (`vitdeploy list --timm PATTERN`: family from its class, size, mean and std from pretrained_cfg) to ONNX. Needs
    vitdeploy[export]."""
    from vitdeploy.optional import ensure_export, require
    ensure_export()
    from vitdeploy import engine
    from vitdeploy.artifact import load_artifact_directory
    from vitdeploy.engine.tensorrt import auto_flavour
    from vitdeploy.export import ExportOptions, export_artifact
    from vitdeploy.timm_recipes import resolve

    loaded = resolve(recipe, dict(timm_kwargs), size, bool(dynamic))
    if loaded.inferred:
        click.echo(f"no recipe for {recipe}: {'; '.join(f'{k} {v}' for k, v in loaded.inferred.items() if v)}",
                   err=True)
    if build_engine:  # a missing runtime is an error before a long export, not after
        if backend == "onnxruntime":
            raise VitdeployError("--engine --backend onnxruntime: the int8 graph needs calibration photos: expected "
                                 "`vitdeploy build OUT --backend onnxruntime --precision int8 --calibration FOLDER` "
                                 "after the export")
        require(engine.builder(auto_flavour() if backend == "auto" else backend).requires)
    out_dir = out_dir or Path("artifacts") / loaded.name
    options = ExportOptions(outputs=outputs, embedding=embedding, position_encodings=position_encodings,
                            dynamic=dynamic, size=size,
                            weights=_weights(checkpoint, pretrained, seed), force=force,
                            bake_preprocessing=bake_preprocessing, external_data=external_data,
                            pyramid=_pyramid(pyramid, pyramid_strides), decoder=decoder)
    export_artifact(loaded, out_dir, options)
    artifact = load_artifact_directory(out_dir)
    spec, files = artifact.input, artifact.export.files
    size_rule = (f"{spec.min_hw[0]}x{spec.min_hw[1]}..{spec.max_hw[0]}x{spec.max_hw[1]}, "
                 f"multiples of {spec.size_multiple}" if spec.dynamic else f"{spec.opt_hw[0]}x{spec.opt_hw[1]}")
    onnx_mib = sum(f.size_bytes for f in files.values()) / 2**20
    click.echo(f"wrote {out_dir}/ ({onnx_mib:.1f} MiB ONNX in {', '.join(files)}, "
               f"export {artifact.export.seconds:.1f}s)")
    shape = ", ".join(map(str, spec.shape("B", "H", "W")))
    values = "RGB pixels, normalised in the graph" if spec.normalised_in_graph else "normalised"
    click.echo(f"input  {spec.name}: [{shape}] {spec.dtype} ({values}), H x W = {size_rule}, batch "
               f"{spec.batch.min}..{spec.batch.max}")
    for output in artifact.outputs:
        shape = (f"[B, {output.channels}, H/{output.stride}, W/{output.stride}]" if output.spatial
                 else f"[B, {output.channels}]")
        click.echo(f"output {output.name}: {shape}")
    if decoder:
        click.echo(f"decoder {DECODER_FILE}: SAM2's prompt encoder + mask decoder at {spec.opt_hw[0]}x{spec.opt_hw[1]} "
                   f"({DECODER_DESCRIPTION})")
    if build_engine:
        click.echo(f"engine {engine.build(out_dir, backend, precision).path}")
