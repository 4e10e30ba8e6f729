"""Benchmark results as a table, JSON, CSV and a latency plot."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from vitdeploy.bench import BenchResult, Row
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import is_installed, missing, require

def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _load(row: Row, limit: float) -> str:
    """CPUs other processes kept busy while the row was timed, `!` past --max-load."""
    if row.other_load is None:
        return "?"
    return f"{row.other_load:.2f}" + ("!" if row.other_load > limit else "")


def describe_run(result: BenchResult) -> str:
    """What was measured where, how, and under which load: the table's first line."""
    options = result.options
    flops = ", ".join(f"{size}: {gflops:.2f}" for size, gflops in result.gflops_per_image.items())
    mode = "each backend in a process of its own" if options.isolated else "all backends in one process"
    before = "?" if result.other_load_before is None else f"{result.other_load_before:.2f}"
    during = "?" if result.other_load_during is None else f"{result.other_load_during:.2f}"
    return (f"{result.artifact} ({result.model}) on {result.device}, {result.threads} threads, {mode}, "
            f"{options.rounds} rounds of {options.warmup} warmup + {options.iterations} timed calls per backend; "
            f"GFLOP/image {flops}; load average {result.load_average} on {result.cpu_count} CPUs at start; "
            f"other processes' load {before} CPUs before, up to {during} during (--max-load {options.max_load:g})")


def format_table(result: BenchResult) -> str:
    """The rows as aligned text, with a header saying what was measured where; a loaded run says so."""
    lines = [describe_run(result)]
    gpu = result.options.device == "cuda"
    header = (f"{'backend':<22} {'prec':<5} {'batch':>5} {'size':>9} {'median ms':>10} {'p90 ms':>9} "
              f"{'img/s':>9} {'speedup':>8} {'(rounds)':>11} {'max_abs':>9} {'cosine':>9} {'parity':>6} "
              f"{'TFLOP/s':>8} {'load':>6}")
    lines.append(header + (f" {'%peak':>6}" if gpu else ""))
    for row in result.rows:
        parity = {True: "ok", False: "FAIL", None: "-"}[row.parity]
        line = (f"{row.backend:<22} {row.precision:<5} {row.batch:>5} {f'{row.height}x{row.width}':>9} "
                f"{row.median_ms:>10.2f} {row.p90_ms:>9.2f} {row.images_per_s:>9.1f} {row.speedup:>7.2f}x "
                f"{f'{row.speedup_range[0]:.2f}-{row.speedup_range[1]:.2f}':>11} "
                f"{row.max_abs:>9.2e} {row.min_cosine:>9.6f} {parity:>6} {row.tflops:>8.3f} "
                f"{_load(row, result.options.max_load):>6}")
        if gpu:
            line += f" {_cell(None if row.peak_fraction is None else row.peak_fraction * 100, '.1f'):>6}"
        lines.append(line)
    if gpu:
        if result.peak:
            peaks = ", ".join(f"{key} {value:g}" for key, value in result.peak["tflops"].items())
            lines.append(f"peak TFLOP/s of {result.peak['entry']} ({result.peak['source']}): {peaks}; fp32 rows of "
                         "ONNX Runtime CUDA and TensorRT are held to the TF32 peak (both may use TF32)")
        else:
            lines.append(f"peak: {result.device} is not in the peak table (%peak not shown)")
    for name, fused in result.notes.items():
        lines.append(f"{name}: {fused}")
    for backend, reason in result.skipped.items():
        lines.append(f"skipped {backend}: {reason}")
    problem = result.load_problem()
    if problem:
        lines.append(f"LOADED: {problem}: these timings are not what a quiet machine gives (not publishable)")
    return "\n".join(lines)


def check_publishable(result: BenchResult) -> None:
    """A table for README or docs comes from an isolated run on a quiet machine."""
    if not result.options.isolated:
        raise VitdeployError("--publish: an in-process run is not published: expected an isolated run "
                             "(drop --in-process)")
    problem = result.load_problem()
    if problem:
        raise VitdeployError(f"--publish: the machine was loaded ({problem}): expected a quiet machine; "
                             "rerun when other work is done, or raise --max-load for a draft")


def write_markdown(result: BenchResult, path: Path) -> None:
    """The table as Markdown for docs/benchmark.md, under a line saying where and how it was measured."""
    lines = [f"_{describe_run(result)}._", "",
             "| backend | precision | batch | size | median ms | img/s | speedup vs eager fp32 | min cosine | parity |",
             "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for row in result.rows:
        parity = {True: "ok", False: "FAIL", None: "-"}[row.parity]
        lines.append(f"| {row.backend} | {row.precision} | {row.batch} | {row.height}x{row.width} | "
                     f"{row.median_ms:.1f} | {row.images_per_s:.1f} | {row.speedup:.2f}x "
                     f"({row.speedup_range[0]:.2f}-{row.speedup_range[1]:.2f}) | {row.min_cosine:.6f} | {parity} |")
    lines += [f"_skipped {backend}: {reason}_" for backend, reason in result.skipped.items()]
    path.write_text("\n".join(lines) + "\n")


def to_dict(result: BenchResult) -> dict[str, Any]:
    return {**asdict(result), "other_load_during": result.other_load_during, "load_problem": result.load_problem()}


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(to_dict(result), indent=2) + "\n")


def write_csv(result: BenchResult, path: Path) -> None:
    """One line per row; the per-round speedup range becomes speedup_min and speedup_max."""
    names = [f.name for f in fields(Row) if f.name != "speedup_range"] + ["speedup_min", "speedup_max"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in result.rows:
            values = asdict(row)
            values["speedup_min"], values["speedup_max"] = values.pop("speedup_range")
            writer.writerow(values)


def check_plot_available() -> None:
    """Before a long run: fail now if --plot cannot be drawn."""
    if not is_installed("matplotlib"):
        raise missing("matplotlib")


def write_plot(result: BenchResult, path: Path) -> None:
    """Median latency against batch size, one line per backend and precision, one panel per input size."""
    require("matplotlib").use("Agg")
    plt = require("matplotlib.pyplot")
    ticker = require("matplotlib.ticker")

    sizes = sorted({(row.height, row.width) for row in result.rows})
    if not sizes:
        raise VitdeployError("nothing was measured: no plot to draw")
    figure, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for axis, (height, width) in zip(axes[0], sizes):
        series: dict[str, list[Row]] = {}
        for row in result.rows:
            if (row.height, row.width) == (height, width):
                series.setdefault(f"{row.backend} {row.precision}", []).append(row)
        for label, rows in series.items():
            rows.sort(key=lambda r: r.batch)
            axis.plot([r.batch for r in rows], [r.median_ms for r in rows], marker="o", label=label)
        axis.set(title=f"{result.artifact} {height}x{width} on {result.device}", xlabel="batch size",
                 ylabel="median latency (ms)")
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({r.batch for r in result.rows}))
        axis.xaxis.set_major_formatter(ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_ylim(bottom=0)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
