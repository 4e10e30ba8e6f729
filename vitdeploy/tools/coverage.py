"""The coverage matrix: what each recipe does when tried, not what it is supposed to do.

For every recipe it exports the fixed artifact and, when the recipe has a size range, the dynamic one;
checks ONNX Runtime against eager PyTorch (max abs error over every output, batch and size `vitdeploy
verify` checks); and builds a TensorRT-RTX fp32 engine (which runs ahead of time on a CPU). Engine
parity needs a GPU: with one, the matrix measures it and records it in a results file; without one,
the column shows what that file holds, with its date and GPU, or "not measured (no GPU)".
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
import torch

from vitdeploy import engine, families
from vitdeploy.artifact import load_artifact_directory
from vitdeploy.atomic import write_json_atomic
from vitdeploy.engine import Engine
from vitdeploy.errors import VitdeployError
from vitdeploy.families.base import Family
from vitdeploy.export import ExportOptions, export_artifact
from vitdeploy.tools.hardware import compute_capability, format_capability, gpu_name
from vitdeploy.models import meta_backbone
from vitdeploy.engine.tensorrt_flavour import use_backend
from vitdeploy.optional import is_installed, missing, require
from vitdeploy.progress import Progress
from vitdeploy.pyramid import pyramid_size_multiple
from vitdeploy.recipes import Recipe, RecipeInput
from vitdeploy.runners import engine_runner
from vitdeploy.timm_recipes import meta_model, recipe_from_timm
from vitdeploy.verify import compare_runners, verify_onnx

MODES = ("fixed", "dynamic")
BATCH_SIZES = (1, 2)
ENGINE_BACKEND = "tensorrt_rtx"


@dataclass
class ModeResult:
    """One artifact (fixed or dynamic) of one recipe: every step's outcome as text, plus its numbers."""

    export: str
    parity: str = "-"
    engine: str = "-"
    gpu: str | None = None
    max_abs: float | None = None
    export_seconds: float | None = None


@dataclass
class RecipeResult:
    recipe: str
    timm_name: str
    family: str
    tested_at: str
    modes: dict[str, ModeResult] = field(default_factory=dict)
    note: str = ""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if not isinstance(exc, VitdeployError) else text
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _round_up(value: int, multiple: int) -> int:
    return multiple * max(1, math.ceil(value / multiple))


def small_variant(recipe: Recipe, family: Family) -> Recipe:
    """The recipe with fewer blocks (its family's small_kwargs) and inputs near 64 px: same family, same code paths."""
    kwargs = {**recipe.timm_kwargs, **family.small_kwargs}
    model = meta_backbone(recipe.timm_name, kwargs, family)
    multiple = pyramid_size_multiple(family.size_multiple(model), recipe.pyramid.strides if recipe.pyramid else ())
    size = (_round_up(64, multiple),) * 2
    ranged = recipe.input.min != recipe.input.max
    lo, hi = ((_round_up(32, multiple),) * 2, (_round_up(96, multiple),) * 2) if ranged else (size, size)
    spec = RecipeInput(mode=recipe.input.mode, size=size, min=lo, max=hi, batch=(1, 1, max(BATCH_SIZES)))
    return replace(recipe, timm_kwargs=kwargs, input=spec, outputs=None)


# The sweep of `vitdeploy matrix --sweep` (docs/backbones.md): the smallest timm model of each class with
# forward_intermediates, none of them named in issue 24 nor of a class a shipped recipe covers, pretrained=False.
SWEEP = (
    "starnet_s050", "dla46x_c", "mobilevit_xxs", "edgenext_xx_small", "mobilenetv3_small_050", "mobilenetv2_035",
    "ese_vovnet19b_slim_dw", "repghostnet_050", "efficientvit_m0", "ghostnet_050", "regnetx_002", "cspnext_tiny",
    "iformer_t", "xcit_nano_12_p8_224", "cs3darknet_focus_s", "efficientvit_b0", "swiftformer_xs",
    "efficientformerv2_s0", "pvt_v2_b0", "fasternet_t0", "fastvit_t8", "lcnetv2_small", "inception_next_atto",
    "rexnet_100", "pit_ti_224", "resnet10t", "repvit_m1", "vit_tiny_patch16_dinov3_qkvb", "coat_tiny",
    "convit_tiny", "deit_tiny_patch16_224", "gmlp_ti16_224", "deit_tiny_distilled_patch16_224", "hgnetv2_b0",
    "shvit_s1", "cpubone_nano", "efficientvim_m1", "crossvit_tiny_240", "maxvit_pico_rw_256", "levit_128s",
    "densenet121", "nf_regnet_b0", "dpn48b", "visformer_tiny", "resnetv2_18", "legacy_seresnet18",
    "poolformerv2_s12", "cait_xxs24_224", "gcvit_xxtiny", "efficientnet_b0", "inception_v3",
)
SWEEP_SIZES = (64, 128, 256)  # the first size a model runs at (a stem can need more than 64 px)


def _signature_default(cls: type, keyword: str) -> Any:
    for base in cls.__mro__[:-1]:
        parameter = inspect.signature(getattr(base, "__init__")).parameters.get(keyword)
        if parameter is not None:
            return parameter.default
    return None


def reduced_kwargs(timm_name: str, family: Family) -> dict[str, Any]:
    """Fewer blocks for a model exported by its timm name: its family's small_kwargs, or for the generic family
    what its class's signature names (depth -> 2, depths / layers -> 1 per stage), kept only where the model
    still builds with the same feature levels."""
    if family.name != "generic":
        return dict(family.small_kwargs)
    model = meta_model(timm_name)
    levels = len(getattr(model, "feature_info"))
    kwargs: dict[str, Any] = {}
    for keyword in ("depth", "depths", "layers"):
        default = _signature_default(type(model), keyword)
        if isinstance(default, int) and not isinstance(default, bool) and keyword == "depth":
            candidate: Any = 2
        elif isinstance(default, (tuple, list)) and all(isinstance(v, int) for v in default):
            candidate = [1] * len(default)
        else:
            continue
        try:
            reduced = meta_model(timm_name, {**kwargs, keyword: candidate})
        except Exception:  # noqa: BLE001 - a keyword the entrypoint fixes itself, or a stage count that differs
            continue
        if keyword == "depth" or len(getattr(reduced, "feature_info")) == levels:
            kwargs[keyword] = candidate
    return kwargs


def timm_variant(timm_name: str, small: bool, size: int = SWEEP_SIZES[0]) -> Recipe:
    """A recipe inferred from the timm name (as `vitdeploy export TIMM_NAME`), with --small's fewer blocks and
    `size` px (rounded up to the size rule) and a 0.5x..1.5x range."""
    recipe = recipe_from_timm(timm_name)
    if not small:
        return recipe
    family = families.get(recipe.family)
    kwargs = reduced_kwargs(timm_name, family)
    multiple = family.size_multiple(meta_backbone(timm_name, kwargs, family))
    edge = _round_up(size, multiple)
    return recipe_from_timm(timm_name, kwargs, (edge, edge))


def _tested_at(recipe: Recipe, family: Family, small: bool) -> str:
    (h, w), spec = recipe.input.size, recipe.input
    text = f"{h}x{w}"
    if spec.min != spec.max and (spec.dynamic or not recipe.inferred):
        text += f" (dynamic {spec.min[0]}x{spec.min[1]}..{spec.max[0]}x{spec.max[1]})"
    if recipe.inferred:
        kwargs = recipe.timm_kwargs
        return text + (f"; {', '.join(f'{k}={v}' for k, v in kwargs.items())}" if kwargs else "")
    if small:
        reduced = ", ".join(f"{k}={v}" for k, v in family.small_kwargs.items())
        text += f"; --small{': ' + reduced if reduced else ''}"
    return text


def _gpu_label() -> str | None:
    capability = compute_capability()
    return None if capability is None else f"{gpu_name()} (sm {format_capability(capability)})"


def _engine_parity(built: Engine) -> tuple[float, bool]:
    """TensorRT-RTX engine vs eager PyTorch, the same checks as the ONNX Runtime column (needs a GPU)."""
    report = compare_runners(built.description, built.path, engine_runner(built, name=ENGINE_BACKEND),
                             "TensorRT-RTX fp32", list(BATCH_SIZES))
    return max(check.max_abs for check in report.checks), report.passed


def try_mode(recipe: Recipe, mode: str, directory: Path, gpu: str | None, note: Callable[[str], None]) -> ModeResult:
    """Export, verify and build one artifact (and run its engine on a GPU); a step's failure is recorded
    and skips the steps after it."""
    quiet = Progress(3, enabled=False)
    note(f"  {mode}: export")
    try:
        export_artifact(recipe, directory, ExportOptions(dynamic=mode == "dynamic"), quiet)
    except VitdeployError as exc:
        return ModeResult(export=f"refused: {_first_line(exc)}")
    except Exception as exc:  # the matrix records every failure instead of stopping at the first
        return ModeResult(export=f"FAIL: {_first_line(exc)}")
    artifact = load_artifact_directory(directory)
    seconds = artifact.export.seconds
    result = ModeResult(export=f"ok ({seconds:.1f} s)", export_seconds=seconds)
    note(f"  {mode}: ONNX Runtime parity")
    try:
        report = verify_onnx(artifact, batch_sizes=list(BATCH_SIZES))
    except Exception as exc:  # e.g. a graph that runs at the export size only
        result.parity = f"FAIL: {_first_line(exc)}"
        return result
    result.max_abs = max(check.max_abs for check in report.checks)
    sizes = len({tuple(check.input_shape[2:]) for check in report.checks})
    bound = recipe.tolerance["fp32"].max_abs
    scaled = bound is not None and result.max_abs > bound  # passed only through scaled_tolerance
    rel_l2 = max(check.max_rel_l2 for check in report.checks)
    result.parity = (f"{'pass' if report.passed else 'FAIL'} {result.max_abs:.1e}"
                     + (f" (bound scaled to the outputs' magnitude; rel L2 {rel_l2:.1e})" if scaled else "")
                     + (f" ({sizes} sizes)" if sizes > 1 else ""))
    if not is_installed(ENGINE_BACKEND):  # not a failure of the recipe
        result.engine = f"not run: {missing(ENGINE_BACKEND)}"
        return result
    note(f"  {mode}: TensorRT-RTX build")
    started = time.perf_counter()
    try:
        built = engine.build(directory, ENGINE_BACKEND, "fp32", progress=quiet)
    except Exception as exc:  # a parser or builder rejection is a result here
        result.engine = f"FAIL: {_first_line(exc)}"
        return result
    result.engine = f"ok ({time.perf_counter() - started:.1f} s)"
    if gpu:
        note(f"  {mode}: engine parity on {gpu}")
        try:
            max_abs, passed = _engine_parity(built)
            result.gpu = f"{'pass' if passed else 'FAIL'} {max_abs:.1e}"
        except Exception as exc:  # a runtime failure is a result too
            result.gpu = f"FAIL: {_first_line(exc)}"
    return result


def measure_timm(timm_name: str, small: bool, work: Path, gpu: str | None, modes: tuple[str, ...],
                 note: Callable[[str], None] = lambda message: None) -> RecipeResult:
    """A timm model by name, without a recipe: fixed at the first of SWEEP_SIZES it runs at (with --small), then
    dynamic over 0.5x..1.5x of that size (1x..1.5x when a smaller one did not run) where the fixed export passed."""
    try:
        recipe = timm_variant(timm_name, small)
    except VitdeployError as exc:
        return RecipeResult(recipe=timm_name, timm_name=timm_name, family="-", tested_at="-",
                            note=f"refused: {_first_line(exc)}")
    result = RecipeResult(recipe="(timm name)", timm_name=timm_name, family=recipe.family, tested_at="")
    for size in SWEEP_SIZES if small else (None,):
        if size is not None and size != SWEEP_SIZES[0]:
            recipe = timm_variant(timm_name, small, size)
        outcome = try_mode(recipe, "fixed", work / f"fixed{size}", gpu, note)
        if " does not run at " not in outcome.export:
            break
    family = families.get(recipe.family)
    result.tested_at = _tested_at(recipe, family, small)
    result.modes["fixed"] = outcome
    if "dynamic" in modes and outcome.parity.startswith("pass"):
        dynamic = recipe_from_timm(timm_name, recipe.timm_kwargs, recipe.input.size, dynamic=True)
        if size not in (None, SWEEP_SIZES[0]):  # the smaller sizes did not run, so the range starts at the export size
            dynamic = replace(dynamic, input=replace(dynamic.input, min=dynamic.input.size))
        result.tested_at = _tested_at(dynamic, family, small)
        result.modes["dynamic"] = try_mode(dynamic, "dynamic", work / "dynamic", gpu, note)
    return result


def measure_recipe(recipe: Recipe, small: bool, work: Path, gpu: str | None,
                   note: Callable[[str], None] = lambda message: None) -> RecipeResult:
    if recipe.unsupported:
        return RecipeResult(recipe=recipe.name, timm_name=recipe.timm_name, family=recipe.family, tested_at="-",
                            note=f"unsupported: {recipe.unsupported}")
    family = families.get(recipe.family)  # the recipe names it; from here on it is the Family
    if small:
        recipe = small_variant(recipe, family)
    result = RecipeResult(recipe=recipe.name, timm_name=recipe.timm_name, family=recipe.family,
                          tested_at=_tested_at(recipe, family, small))
    if recipe.input.min == recipe.input.max:
        result.note = f"fixed size only: {family.fixed_only or 'the recipe has no size range'}"
    modes = MODES if recipe.input.min != recipe.input.max else MODES[:1]
    for mode in modes:
        result.modes[mode] = try_mode(recipe, mode, work / f"{recipe.name}_{mode}", gpu, note)
    return result


def load_gpu_results(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VitdeployError(f"GPU results file {path} is not valid JSON: {exc}") from None


def _result_key(result: RecipeResult, small: bool) -> str:
    return f"{result.recipe}{' --small' if small else ''}"


def gpu_entries(results: list[RecipeResult], small: bool, gpu: str) -> dict[str, Any]:
    """This run's engine parity, keyed like the results file: recipe (and ' --small')."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    entries = {}
    for result in results:
        measured = {mode: r.gpu for mode, r in result.modes.items() if r.gpu}
        if measured:
            entries[_result_key(result, small)] = {"modes": measured, "gpu": gpu, "date": date}
    return entries


def _versions() -> str:
    versions = [f"torch {torch.__version__}", f"timm {timm.__version__}",
                f"onnxruntime {require('onnxruntime').__version__}"]
    if is_installed("tensorrt_rtx"):
        versions.append(f"tensorrt_rtx {use_backend('tensorrt_rtx').__version__}")
    else:
        versions.append("tensorrt_rtx not installed")
    return ", ".join(versions)


def _cell(result: RecipeResult, step: str) -> str:
    if not result.modes:
        return result.note if step == "export" else "-"
    return "<br>".join(f"{mode}: {getattr(r, step)}" for mode, r in result.modes.items())


def _gpu_cell(result: RecipeResult, small: bool, recorded: dict[str, Any]) -> str:
    entry = recorded.get(_result_key(result, small))
    if entry:
        modes = "<br>".join(f"{mode}: {text}" for mode, text in entry["modes"].items())
        return f"{modes}<br>({entry['gpu']}, {entry['date']})"
    return "not measured (no GPU)" if result.modes else "-"


def render_markdown(results: list[RecipeResult], small: bool, command: str, recorded: dict[str, Any]) -> str:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "# Coverage matrix",
        "",
        f"Generated by `{command}` on {date} ({platform.machine()} CPU, {_versions()}); do not edit by hand.",
        "",
        "Each recipe is exported with random weights (seed 0). **ONNX Runtime parity** is the largest absolute "
        "error against eager PyTorch (the timm model; for the sam2 family Meta's own `sam2` ImageEncoder with the "
        "same weights) over every output, batch " + " and ".join(map(str, BATCH_SIZES)) + ", and "
        "for a dynamic artifact its export size, min, max and both non-square corners (fp32 tolerance: "
        "the recipe's, 1e-4 by default, times an output's magnitude where that is above 1). **TensorRT-RTX "
        "build** parses the ONNX and builds a portable fp32 engine ahead of time (no GPU needed). **Engine "
        "parity on GPU** runs that engine against eager "
        "PyTorch the same way; it needs a GPU.",
        "",
    ]
    if small:
        lines += ["**Reduced models (`--small`)**: every recipe ran with fewer blocks and inputs near 64 px "
                  "(column *tested at*), so this CPU run finishes in minutes; the code paths (family adapter, "
                  "position-embedding resampling, pyramid, engine build) are the same as at full size.", ""]
    lines += ["| recipe | timm model | family | tested at | export | ONNX Runtime parity (max abs) "
              "| TensorRT-RTX build | engine parity on GPU | notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        note = r.note if r.modes else ""
        lines.append(f"| {r.recipe} | `{r.timm_name}` | {r.family} | {r.tested_at} | {_cell(r, 'export')} | "
                     f"{_cell(r, 'parity')} | {_cell(r, 'engine')} | {_gpu_cell(r, small, recorded)} | {note} |")
    return "\n".join(lines) + "\n"


def run_matrix(recipes: list[Recipe], small: bool, output: Path, command: str, gpu_results: Path | None,
               note: Callable[[str], None] = lambda message: None) -> list[RecipeResult]:
    """Measure every recipe and write the markdown table to `output`; returns the results."""
    gpu = _gpu_label()
    results = []
    for recipe in recipes:
        note(f"{recipe.name} ({recipe.timm_name})")
        with tempfile.TemporaryDirectory(prefix="vitdeploy-matrix-") as work:
            results.append(measure_recipe(recipe, small, Path(work), gpu, note))
    recorded = load_gpu_results(gpu_results)
    if gpu:
        recorded.update(gpu_entries(results, small, gpu))
        if gpu_results:
            gpu_results.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(gpu_results, recorded)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_markdown(results, small, command, recorded))
    return results


def sweep_passed(result: RecipeResult) -> bool:
    fixed = result.modes.get("fixed")
    return bool(fixed and fixed.export.startswith("ok") and fixed.parity.startswith("pass"))


def render_sweep(results: list[RecipeResult], command: str, total: int) -> str:
    """docs/backbones.md's table: one row per timm model, fixed then dynamic."""
    passed = sum(sweep_passed(r) for r in results)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "# Sweep: timm backbones exported by name",
        "",
        f"Generated by `{command}` on {date} ({platform.machine()} CPU, {_versions()}); do not edit by hand.",
        "",
        f"**{passed} of {len(results)}** models tried ({total} in the sweep) export at a fixed size and match eager "
        "PyTorch in ONNX Runtime (fp32, max abs error <= 1e-4, times an output's magnitude where that is above 1; "
        "batch 1 and 2). Each model is what `vitdeploy export TIMM_NAME` does with no recipe, random weights "
        "(seed 0), fewer blocks where its class's signature allows (column *tested at*) and the first of "
        + ", ".join(f"{s} px" for s in SWEEP_SIZES) + " it runs at; dynamic exports (0.5x..1.5x of that size, "
        "1x..1.5x when a smaller one did not run) are probed at other sizes before they ship and verified at 5 sizes.",
        "",
        "| timm model | family | tested at | export | ONNX Runtime parity (max abs) | TensorRT-RTX build | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| `{r.timm_name}` | {r.family} | {r.tested_at} | {_cell(r, 'export')} | {_cell(r, 'parity')} | "
                     f"{_cell(r, 'engine')} | {r.note if r.modes else ''} |")
    return "\n".join(lines) + "\n"


def run_sweep(names: list[str], small: bool, modes: tuple[str, ...], output: Path, command: str,
              note: Callable[[str], None] = lambda message: None) -> list[RecipeResult]:
    """Measure timm models by name; the table is rewritten after each model, so a long sweep shows progress."""
    results: list[RecipeResult] = []
    for name in names:
        note(name)
        with tempfile.TemporaryDirectory(prefix="vitdeploy-sweep-") as work:
            results.append(measure_timm(name, small, Path(work), None, modes, note))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_sweep(results, command, len(names)))
    return results
