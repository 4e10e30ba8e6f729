"""The coverage matrix: what each recipe does when tried, not what it is supposed to do.

For every recipe it exports the fixed artifact and, when the recipe has a size range, the dynamic one;
checks ONNX Runtime against eager PyTorch (max abs error over every output, batch and size `vitdeploy
verify` checks); and builds a TensorRT-RTX fp32 engine (which runs ahead of time on a CPU). Engine
parity needs a GPU: with one, the matrix measures it and records it in a results file; without one,
the column shows what that file holds, with its date and GPU, or "not measured (no GPU)".
"""

from __future__ import annotations

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


def _tested_at(recipe: Recipe, family: Family, small: bool) -> str:
    (h, w), spec = recipe.input.size, recipe.input
    text = f"{h}x{w}"
    if spec.min != spec.max:
        text += f" (dynamic {spec.min[0]}x{spec.min[1]}..{spec.max[0]}x{spec.max[1]})"
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
    result.parity = (f"{'pass' if report.passed else 'FAIL'} {result.max_abs:.1e}"
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
        "the recipe's, 1e-4 by default). **TensorRT-RTX build** parses the ONNX and builds a portable fp32 "
        "engine ahead of time (no GPU needed). **Engine parity on GPU** runs that engine against eager "
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
