"""ONNX export of a recipe's pyramid with the torch.export-based exporter, its description, and a staged write."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass
import timm
import torch
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from vitdeploy import families
from vitdeploy.version import __version__
from vitdeploy.artifact import DESCRIPTION_FILE, METADATA_KEY, ONNX_FILE, load_artifact
from vitdeploy.atomic import staged_directory, write_bytes_atomic
from vitdeploy.description import BatchRange, Description, ExportRecord, InputSpec, PyramidSpec, size_within
from vitdeploy.errors import VitdeployError, VitdeployWarning
from vitdeploy.export.module import EXAMPLE_BATCH, dynamic_shapes
from vitdeploy.export.normalise import NormaliseInGraph
from vitdeploy.integrity import describe_files
from vitdeploy.models import Weights, create_model, nonfinite_tensors, weights_record
from vitdeploy.progress import Progress
from vitdeploy.pyramid import describe_outputs, pyramid_size_multiple
from vitdeploy.recipes import Recipe
from vitdeploy.runners import create_runner
from vitdeploy.parity import verification_sizes
from vitdeploy.verify import compare_runners

OPSET = 20  # LayerNormalization (17) and Gelu (20) are single nodes, which ONNX Runtime and TensorRT fuse
INPUT_NAME = "image"
NO_PYRAMID = PyramidSpec(kind="none", strides=())  # ExportOptions.pyramid: drop the recipe's pyramid


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
    pyramid: PyramidSpec | None = None  # None: the recipe's; NO_PYRAMID: none
    position_encodings: bool | None = None  # None: the recipe's; SAM2: pos_stride{s} outputs
    decoder: bool = False  # SAM2: also its prompt encoder + mask decoder (decoder.onnx) from the checkpoint


def _versions() -> dict[str, str]:
    return {"vitdeploy": __version__, "torch": torch.__version__, "timm": timm.__version__, "onnx": onnx.__version__}


def _input_spec(recipe: Recipe, model: torch.nn.Module, dynamic: bool, size: tuple[int, int] | None,
                multiple: int, normalised_in_graph: bool) -> InputSpec:
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg")  # set by timm.create_model (no class attribute)
    opt = size or recipe.input.size
    lo, hi = (recipe.input.min, recipe.input.max) if dynamic else (opt, opt)
    if dynamic and recipe.inferred is None and not size_within(opt, lo, hi):
        raise VitdeployError(f"size {opt[0]}x{opt[1]} is outside recipe '{recipe.name}' range "
                             f"{lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}")
    spec = InputSpec(
        name=INPUT_NAME, layout="NHWC" if normalised_in_graph else "NCHW",
        dtype="uint8" if normalised_in_graph else "float32", normalised_in_graph=normalised_in_graph,
        channels=3, color="RGB", mode="dynamic" if dynamic else "fixed", size_multiple=multiple,
        min_hw=lo, opt_hw=opt, max_hw=hi, batch=BatchRange(*recipe.input.batch),
        mean=tuple(recipe.mean or cfg["mean"]), std=tuple(recipe.std or cfg["std"]), pixel_scale=255.0)
    for hw in {lo, opt, hi}:
        problem = replace(spec, mode="dynamic").size_error(*hw)
        if problem:
            source = f"{recipe.timm_name} (no recipe)" if recipe.inferred else \
                f"recipe '{recipe.name}' for {recipe.timm_name}"
            raise VitdeployError(f"{source}: {problem}: expected --size HxW with multiples of {multiple}")
    return spec


def build_export_model(recipe: Recipe, options: ExportOptions) -> tuple[torch.nn.Module, Description]:
    """The rewritten module to export and the artifact's description (without its export record)."""
    if recipe.unsupported:
        raise VitdeployError(f"recipe '{recipe.name}' ({recipe.timm_name}) cannot be exported: {recipe.unsupported}")
    family = families.get(recipe.family)  # the recipe names it; from here on it is the Family
    dynamic = recipe.input.dynamic if options.dynamic is None else options.dynamic
    size = options.size or recipe.input.size
    model, loaded = create_model(recipe.timm_name, recipe.timm_kwargs, options.weights, img_size=size, family=family)
    broken = nonfinite_tensors(model)
    if broken:
        warnings.warn(f"{len(broken)} weight tensors of {recipe.timm_name} hold NaN or infinite values (e.g. "
                      f"{broken[0]}) in {options.weights.describe()}: the exported outputs will not be finite and "
                      "verify will fail", VitdeployWarning, stacklevel=2)
    embedding = recipe.embedding if options.embedding is None else options.embedding
    positions = recipe.position_encodings if options.position_encodings is None else options.position_encodings
    spec = recipe.pyramid if options.pyramid is None else (None if options.pyramid is NO_PYRAMID else options.pyramid)
    described, pyramid = describe_outputs(model, recipe.timm_name,
                                          options.outputs if options.outputs is not None else recipe.outputs,
                                          embedding, spec, (lambda features: family.position_outputs(model, features))
                                          if positions else None)
    problem = family.dynamic_problem(model) if dynamic else None
    if problem:
        raise VitdeployError(f"{recipe.timm_name} runs at one resolution only: {problem}; export it fixed "
                             f"(families that export dynamic sizes: {families.dynamic_families()})")
    if dynamic and recipe.input.min == recipe.input.max:
        raise VitdeployError(f"recipe '{recipe.name}' has no dynamic range: set input.min and input.max")
    multiple = pyramid_size_multiple(family.size_multiple(model), pyramid.strides if pyramid else ())
    description = Description(
        recipe=None if recipe.inferred else recipe.name, timm_name=recipe.timm_name, family=family.name,
        timm_kwargs=recipe.timm_kwargs, inferred=recipe.inferred,
        weights=weights_record(options.weights, model, loaded),
        input=_input_spec(recipe, model, dynamic, size, multiple, options.bake_preprocessing),
        outputs=tuple(described), pyramid=pyramid, tolerance=dict(recipe.tolerance), versions=_versions(),
        neck=family.neck(model))
    wrapped = family.pyramid_module(family.adapt(model, dynamic), description.outputs, pyramid).eval()
    if options.bake_preprocessing:
        wrapped = NormaliseInGraph(wrapped, description.input).eval()
    if recipe.inferred or family.probe_dynamic:  # no recipe vouches for the size: eager timm must run it first
        _check_runs(wrapped, description)
    return wrapped, description


def _example(spec: InputSpec, batch: int = EXAMPLE_BATCH, hw: tuple[int, int] | None = None) -> torch.Tensor:
    height, width = hw or spec.opt_hw
    if spec.normalised_in_graph:
        return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8)
    return torch.randn(batch, 3, height, width)


def _check_runs(module: torch.nn.Module, description: Description) -> None:
    """One eager forward at the export size (and a dynamic range's min and max), so a size the model cannot take
    is one line, not an exporter trace nor a dynamic-size probe that blames the graph for the model's own limit."""
    spec = description.input
    for height, width in dict.fromkeys([spec.opt_hw, *((spec.min_hw, spec.max_hw) if spec.dynamic else ())]):
        try:
            with torch.no_grad():
                module(_example(spec, 1, (height, width)))
        except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            if (height, width) == spec.opt_hw:
                inferred = (description.inferred or {}).get("size")  # by timm name: where the size came from
                where = f" (inferred: {inferred})" if inferred and "from --size" not in inferred else ""
                expected = "a --size it takes, e.g. its pretrained size"
            else:
                where = f", its dynamic range's {'min' if (height, width) == spec.min_hw else 'max'},"
                expected = "a range it takes: a larger --size, or export it --fixed"
            raise VitdeployError(f"{description.timm_name} does not run at {height}x{width}{where} in eager timm "
                                 f"({reason}): expected {expected}") from None


def _name_dimensions(graph: Any, description: Description) -> None:
    """Readable symbolic dims on the graph's inputs and outputs: `height/16` instead of torch's `s39`."""
    spec = description.input
    height, width = ("height", "width") if spec.dynamic else spec.opt_hw
    graph.inputs[0].shape = ir.Shape(spec.shape("batch", height, width))
    for value, output in zip(graph.outputs, description.outputs):
        if not output.spatial:
            value.shape = ir.Shape(["batch", output.channels])
        elif spec.dynamic:
            value.shape = ir.Shape(["batch", output.channels, f"height/{output.stride}", f"width/{output.stride}"])


def onnx_files(path: Path) -> list[Path]:
    """`path` and the external-data files its initializers point to (models over 2 GB, or --external-data)."""
    model = onnx.load(str(path), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    return [path, *(path.parent / location for location in sorted(locations))]


def export_onnx(module: torch.nn.Module, description: Description, path: Path, external_data: bool = False) -> None:
    """torch.export-based ONNX export with named outputs and the description in metadata_props; weights
    go to `<path>.data` when `external_data` or when the model is over 2 GB (protobuf's limit)."""
    spec = description.input
    example = _example(spec)
    with torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, input_names=[spec.name],
            output_names=description.output_names, dynamic_shapes=dynamic_shapes(spec), verbose=False)
    if program is None:  # only the legacy exporter (dynamo=False) returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    _name_dimensions(program.model.graph, description)
    TopologicalSortPass()(program.model)  # the exporter can emit a symbolic-size node after its users (Gemma 4)
    program.model.metadata_props[METADATA_KEY] = description.to_json()
    program.save(str(path), external_data=external_data)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RuntimeError(f"exported graph failed onnx.checker: {exc}") from exc


def dynamic_size_problem(directory: Path) -> str | None:
    """Run a staged dynamic artifact in ONNX Runtime at its other verification sizes against eager PyTorch (batch
    1): why the graph does not hold there (it baked its export size in), or None."""
    artifact = load_artifact(directory)
    spec = artifact.input
    sizes = [hw for hw in verification_sizes(spec) if hw != spec.opt_hw]
    try:
        report = compare_runners(artifact.description, directory, create_runner(artifact, "onnxruntime_cpu"),
                                 "dynamic-size probe", [1], sizes)
    except Exception as exc:  # ONNX Runtime stops on a shape the graph baked in: that is the answer
        return f"ONNX Runtime fails at another size ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})"
    failed = [check for check in report.checks if not check.passed]
    if not failed:
        return None
    check = max(failed, key=lambda c: c.max_abs)
    height, width = check.input_shape[-2:]
    return (f"at {height}x{width} output {check.output} is {check.shape} where eager PyTorch gives "
            f"{check.expected_shape}, max abs error {check.max_abs:.1e} (the graph keeps its export size)")


def export_artifact(recipe: Recipe, out_dir: Path, options: ExportOptions = ExportOptions(),
                    progress: Progress | None = None) -> Path:
    """Export `recipe` into the artifact directory `out_dir`; nothing appears there unless it all succeeds. A
    dynamic export of a family without a known size rule (generic) is probed at other sizes first."""
    dynamic = recipe.input.dynamic if options.dynamic is None else options.dynamic
    probe = dynamic and families.get(recipe.family).probe_dynamic  # generic: other sizes run before it ships
    progress = progress or Progress(total=3 + bool(options.decoder) + bool(probe))
    decoder_checkpoint = options.weights.checkpoint if options.decoder else None
    if options.decoder and (recipe.family != "sam2" or decoder_checkpoint is None):
        raise VitdeployError(f"--decoder for recipe '{recipe.name}' (family '{recipe.family}', "
                             f"{options.weights.describe()}): expected a SAM2 recipe and --checkpoint with SAM2's "
                             "whole checkpoint (the prompt encoder and mask decoder weights come from it)")
    if decoder_checkpoint is not None:
        from vitdeploy.sam2.decoder import check_decoder_checkpoint, export_decoder  # needs Meta's sam2 package

        check_decoder_checkpoint(decoder_checkpoint)
    with staged_directory(Path(out_dir), options.force) as staging:
        with progress.step(f"building {recipe.timm_name} with {options.weights.describe()}"):
            module, description = build_export_model(recipe, options)
        onnx_path = staging / ONNX_FILE
        started = time.perf_counter()
        pixels = ", uint8 NHWC input normalised in the graph" if description.input.normalised_in_graph else ""
        with progress.step(f"exporting ONNX (opset {OPSET}, {description.input.mode} resolution{pixels})"):
            try:
                export_onnx(module, description, onnx_path, options.external_data)
            except Exception as exc:  # no rule known ahead (generic): symbolic sizes the exporter refuses are the answer
                if not (description.input.dynamic and families.get(description.family).probe_dynamic):
                    raise
                cause = exc.__cause__ or exc  # the exporter wraps torch.export's own error
                reason = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
                raise VitdeployError(f"{recipe.timm_name} does not export dynamic sizes: the exporter fails with a "
                                     f"symbolic height and width ({type(cause).__name__}: {reason}); export it "
                                     "--fixed") from None
        if decoder_checkpoint is not None:
            with progress.step("exporting SAM2's prompt encoder + mask decoder (decoder.onnx)"):
                export_decoder(decoder_checkpoint, description, staging, OPSET)
        with progress.step("writing the description"):
            record = ExportRecord(opset=OPSET, exporter="torch.export", precision="fp32", onnx_file=ONNX_FILE,
                                  files=describe_files(onnx_files(onnx_path)),
                                  seconds=round(time.perf_counter() - started, 2))
            created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            description = replace(description, export=record, created_utc=created)
            write_bytes_atomic(staging / DESCRIPTION_FILE, description.to_json().encode())
        if probe:
            with progress.step("probing other sizes in ONNX Runtime (dynamic export of a generic-family model)"):
                problem = dynamic_size_problem(staging)
            if problem:
                raise VitdeployError(f"{recipe.timm_name} does not export dynamic sizes: {problem}; export it --fixed")
    return Path(out_dir)
