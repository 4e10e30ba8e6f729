"""ONNX export of a recipe's pyramid with the torch.export-based exporter, metadata and atomic write."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vitdeploy import __version__
from vitdeploy.artifact import FORMAT, FORMAT_VERSION, METADATA_KEY, ONNX_FILE, SIDECAR_FILE
from vitdeploy.atomic import staged_directory, write_json_atomic
from vitdeploy.errors import VitdeployError, VitdeployWarning
from vitdeploy.export.adapt import adapt_for_export, size_multiple, supports_dynamic
from vitdeploy.export.pixels import NormalisedPixels
from vitdeploy.integrity import describe_files
from vitdeploy.inputs import axis_names, layout_shape, pixels_in_graph, size_error
from vitdeploy.models import (Weights, check_outputs, create_model, default_outputs, describe_outputs,
                              feature_levels, nonfinite_tensors, state_dict_sha256)
from vitdeploy.progress import Progress
from vitdeploy.pyramid import describe_pyramid, pyramid_module, pyramid_size_multiple
from vitdeploy.recipes import Recipe

OPSET = 20  # LayerNormalization (17) and Gelu (20) are single nodes, which ONNX Runtime and TensorRT fuse
INPUT_NAME = "image"
EXAMPLE_BATCH = 2  # an example batch of 1 makes torch.export specialise the batch dimension to 1


@dataclass(frozen=True)
class ExportOptions:
    """What a user may change from the recipe on the command line."""

    outputs: tuple[int, ...] | None = None
    embedding: bool | None = None
    dynamic: bool | None = None
    size: tuple[int, int] | None = None
    weights: Weights = Weights("random")
    force: bool = False
    bake_preprocessing: bool = False  # uint8 NHWC input, normalised in the graph
    external_data: bool = False  # weights in model.onnx.data even below 2 GB (above, always)


def _versions() -> dict[str, str]:
    import onnx
    import timm

    return {"vitdeploy": __version__, "torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__}


def _input_spec(recipe: Recipe, model: torch.nn.Module, dynamic: bool, size: tuple[int, int] | None,
                multiple: int, normalised_in_graph: bool) -> dict[str, Any]:
    cfg = model.pretrained_cfg
    opt = tuple(size or recipe.input.size)
    lo, hi = (recipe.input.min, recipe.input.max) if dynamic else (opt, opt)
    if dynamic and not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
        raise VitdeployError(f"size {opt[0]}x{opt[1]} is outside recipe '{recipe.name}' range "
                             f"{lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}")
    spec = {
        "name": INPUT_NAME, "layout": "NHWC" if normalised_in_graph else "NCHW",
        "dtype": "uint8" if normalised_in_graph else "float32", "normalised_in_graph": normalised_in_graph,
        "channels": 3, "color": "RGB",
        "mode": "dynamic" if dynamic else "fixed", "size_multiple": multiple,
        "min_hw": list(lo), "opt_hw": list(opt), "max_hw": list(hi),
        "batch": dict(zip(("min", "opt", "max"), recipe.input.batch)),
        "mean": list(recipe.mean or cfg["mean"]), "std": list(recipe.std or cfg["std"]), "pixel_scale": 255.0,
    }
    for hw in {tuple(lo), tuple(opt), tuple(hi)}:
        problem = size_error({**spec, "mode": "dynamic"}, *hw)
        if problem:
            raise VitdeployError(f"recipe '{recipe.name}' for {recipe.timm_name}: {problem}")
    return spec


def _dynamic_shapes(spec: dict[str, Any], dynamic: bool) -> tuple[dict[int, Any]]:
    """Batch is always dynamic; height and width are multiples of the size rule when `dynamic`."""
    dim = torch.export.Dim
    batch = spec["batch"]
    shapes: dict[int, Any] = {0: dim("batch", min=batch["min"], max=max(batch["max"], EXAMPLE_BATCH))}
    if dynamic:
        m = spec["size_multiple"]
        (min_h, min_w), (max_h, max_w) = spec["min_hw"], spec["max_hw"]
        axes = axis_names(spec)
        shapes[axes.index("height")] = m * dim("height_units", min=min_h // m, max=max_h // m)
        shapes[axes.index("width")] = m * dim("width_units", min=min_w // m, max=max_w // m)
    return (shapes,)


def build_export_model(recipe: Recipe, options: ExportOptions) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The timm model, its pyramid description, and the rewritten module to export."""
    if recipe.unsupported:
        raise VitdeployError(f"recipe '{recipe.name}' ({recipe.timm_name}) cannot be exported: {recipe.unsupported}")
    dynamic = recipe.input.dynamic if options.dynamic is None else options.dynamic
    size = options.size or recipe.input.size
    model, loaded = create_model(recipe.timm_name, recipe.timm_kwargs, options.weights, img_size=size)
    broken = nonfinite_tensors(model)
    if broken:
        warnings.warn(f"{len(broken)} weight tensors of {recipe.timm_name} hold NaN or infinite values (e.g. "
                      f"{broken[0]}) in {options.weights.describe()}: the exported outputs will not be finite and "
                      "verify will fail", VitdeployWarning, stacklevel=2)
    levels = feature_levels(model, recipe.timm_name)
    outputs = options.outputs if options.outputs is not None else recipe.outputs or default_outputs(levels)
    check_outputs(recipe.timm_name, levels, outputs)
    if dynamic and not supports_dynamic(model, recipe.family):
        raise VitdeployError(f"{recipe.timm_name} runs at one resolution only: dynamic height/width needs a "
                             "backbone that resamples its position embeddings (ViT, EVA or Swin with "
                             "dynamic_img_size, Hiera abswin or HieraDet, ConvNeXt, Twins); export it fixed")
    if dynamic and recipe.input.min == recipe.input.max:
        raise VitdeployError(f"recipe '{recipe.name}' has no dynamic range: set input.min and input.max")
    embedding = recipe.embedding if options.embedding is None else options.embedding
    described, pyramid = describe_outputs(model, levels, outputs, embedding), None
    if recipe.pyramid:
        described, pyramid = describe_pyramid(described, recipe.pyramid, recipe.timm_name)
    multiple = pyramid_size_multiple(size_multiple(model, recipe.family), recipe.pyramid)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "recipe": recipe.name,
        "timm_name": recipe.timm_name, "family": recipe.family, "timm_kwargs": recipe.timm_kwargs,
        "weights": {"source": options.weights.source, "seed": options.weights.seed,
                    "checkpoint": str(options.weights.checkpoint) if options.weights.checkpoint else None,
                    "sha256": state_dict_sha256(model), **(loaded or {})},
        "input": _input_spec(recipe, model, dynamic, size, multiple, options.bake_preprocessing),
        "outputs": described,
        "pyramid": pyramid,
        "tolerance": {k: vars(v) for k, v in recipe.tolerance.items()},
        "versions": _versions(),
    }
    wrapped = pyramid_module(adapt_for_export(model, recipe.family, dynamic), described, pyramid)
    if options.bake_preprocessing:
        wrapped = NormalisedPixels(wrapped, meta["input"]).eval()
    return wrapped, meta


def _name_dimensions(graph: Any, meta: dict[str, Any]) -> None:
    """Readable symbolic dims on the graph's inputs and outputs: `height/16` instead of torch's `s39`."""
    import onnx_ir as ir

    dynamic = meta["input"]["mode"] == "dynamic"
    height, width = ("height", "width") if dynamic else meta["input"]["opt_hw"]
    graph.inputs[0].shape = ir.Shape(layout_shape(meta["input"], "batch", height, width))
    for value, output in zip(graph.outputs, meta["outputs"]):
        if output["kind"] != "feature":
            value.shape = ir.Shape(["batch", output["channels"]])
        elif dynamic:
            stride = output["stride"]
            value.shape = ir.Shape(["batch", output["channels"], f"height/{stride}", f"width/{stride}"])


def onnx_files(path: Path) -> list[Path]:
    """`path` and the external-data files its initializers point to (models over 2 GB, or --external-data)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return [path, *(path.parent / location for location in sorted(locations))]


def export_onnx(module: torch.nn.Module, meta: dict[str, Any], path: Path, external_data: bool = False) -> None:
    """torch.export-based ONNX export with named outputs and the description in metadata_props; weights
    go to `<path>.data` when `external_data` or when the model is over 2 GB (protobuf's limit)."""
    import onnx

    spec = meta["input"]
    height, width = spec["opt_hw"]
    if pixels_in_graph(spec):
        example = torch.randint(0, 256, (EXAMPLE_BATCH, height, width, 3), dtype=torch.uint8)
    else:
        example = torch.randn(EXAMPLE_BATCH, 3, height, width)
    with torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, input_names=[spec["name"]],
            output_names=[o["name"] for o in meta["outputs"]],
            dynamic_shapes=_dynamic_shapes(spec, spec["mode"] == "dynamic"), verbose=False)
    _name_dimensions(program.model.graph, meta)
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(str(path), external_data=external_data)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"exported graph failed onnx.checker: {exc}") from exc


def export_artifact(recipe: Recipe, out_dir: Path, options: ExportOptions = ExportOptions(),
                    progress: Progress | None = None) -> Path:
    """Export `recipe` into the artifact directory `out_dir`; nothing appears there unless it all succeeds."""
    progress = progress or Progress(total=3)
    with staged_directory(out_dir, options.force) as staging:
        with progress.step(f"building {recipe.timm_name} with {options.weights.describe()}"):
            module, meta = build_export_model(recipe, options)
        onnx_path = staging / ONNX_FILE
        started = time.perf_counter()
        pixels = ", uint8 NHWC input normalised in the graph" if pixels_in_graph(meta["input"]) else ""
        with progress.step(f"exporting ONNX (opset {OPSET}, {meta['input']['mode']} resolution{pixels})"):
            export_onnx(module, meta, onnx_path, options.external_data)
        with progress.step("writing metadata"):
            meta["export"] = {"opset": OPSET, "exporter": "torch.export", "precision": "fp32",
                              "onnx_file": ONNX_FILE, "files": describe_files(onnx_files(onnx_path)),
                              "seconds": round(time.perf_counter() - started, 2)}
            meta["created_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            write_json_atomic(staging / SIDECAR_FILE, meta)
    return out_dir
