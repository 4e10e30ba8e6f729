"""`vitdeploy bench ARTIFACT`: latency, throughput and speedup over eager PyTorch, per backend."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import SizeList, batch_sizes_option, precision_option, seed_option, threads_option
from vitdeploy.errors import VitdeployError
from vitdeploy.machine_load import DEFAULT_MAX_LOAD
from vitdeploy.runners.candidates import COMPILE_PRECISIONS


@click.command()
@click.argument("target")
@batch_sizes_option(default="1,8")
@click.option("--sizes", type=SizeList(), help="HxW sizes within the artifact's range [default: its export size].")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed calls per backend and shape.")
@click.option("--iterations", type=int, default=10, show_default=True, help="Timed calls per backend, shape and round.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Rounds over all backends; speedup is the median of per-round ratios to eager.")
@threads_option(help="Intra-op threads of every runtime [default: torch's].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: cuda when torch sees a GPU.")
@click.option("--isolated/--in-process", default=True, show_default=True,
              help="Each backend (eager included) in a process of its own, as a user runs it; or all in this one "
                   "(quicker to start; runtimes then share its threads and memory).")
@click.option("--max-load", type=float, default=DEFAULT_MAX_LOAD, show_default=True,
              help="CPUs other processes may keep busy on average, before or during the run, before it is flagged "
                   "as loaded (and refused by --publish).")
@click.option("--peers", is_flag=True,
              help="Also time the torch peers a user would pick: torch.compile fp32 and + autocast bf16 (fp16 too on "
                   "a GPU), and torchao int8 on a CPU (vitdeploy[torchao]).")
@click.option("--autocast", type=click.Choice(["bf16", "fp16"]), multiple=True,
              help="Also time eager PyTorch under autocast at this precision (repeatable).")
@click.option("--compile", "compile_", type=click.Choice(COMPILE_PRECISIONS), multiple=True,
              help="Also time torch.compile (inductor, freezing) at fp32, or with autocast bf16 / fp16 (repeatable).")
@click.option("--torchao", is_flag=True, help="Also time torchao's int8 for x86 CPUs (PT2E, X86InductorQuantizer).")
@click.option("--ort-optimized", is_flag=True,
              help="Also time the graph after onnxruntime.transformers' optimiser (model_type vit).")
@click.option("--no-engines", is_flag=True, help="Skip the artifact's engines (TensorRT, OpenVINO, AOTInductor).")
@precision_option(multiple=True, help="Time only the artifact's engines (and ONNX Runtime on model.onnx, fp32) of "
                                      "this precision (repeatable) [default: all]; eager fp32 is always timed, the "
                                      "reference.")
@seed_option()
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write results as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the rows as CSV.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of latency against batch size (needs vitdeploy[plot]).")
@click.option("--publish", "publish_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the table as Markdown for docs/benchmark.md: only from an isolated run on a quiet machine.")
def bench(target: str, batch_sizes: tuple[int, ...], sizes: tuple[tuple[int, int], ...] | None, warmup: int,
          iterations: int, rounds: int, threads: int | None, device: str, isolated: bool, max_load: float,
          peers: bool, autocast: tuple[str, ...], compile_: tuple[str, ...], torchao: bool, ort_optimized: bool,
          no_engines: bool, precisions: tuple[str, ...], seed: int, json_path: Path | None, csv_path: Path | None,
          plot_path: Path | None, publish_path: Path | None) -> None:
    """Time TARGET on eager PyTorch, ONNX Runtime, its engines and (asked for) torch peers, on the same inputs,
    each in a process of its own unless --in-process.

    TARGET is an artifact directory or .onnx, or a recipe (name or .toml), which is then exported first
    (random weights, seed 0) into a temporary directory. Needs vitdeploy[export] (torch is the baseline)."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    import torch

    from vitdeploy.bench import BenchOptions, artifact_or_recipe, run_bench
    from vitdeploy.tools.bench_report import (check_plot_available, check_publishable, format_table, write_csv,
                                              write_json, write_markdown, write_plot)

    if plot_path:
        check_plot_available()
    if publish_path and not isolated:
        raise VitdeployError("--publish with --in-process: expected an isolated run (published tables come from one)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    options = BenchOptions(batch_sizes=batch_sizes, sizes=sizes or (), warmup=warmup, iterations=iterations,
                           rounds=rounds, threads=threads, device=device, autocast=autocast, compile=compile_,
                           torchao=torchao, ort_optimized=ort_optimized, engines=not no_engines,
                           precisions=precisions, seed=seed, isolated=isolated, max_load=max_load)
    with artifact_or_recipe(target) as artifact:
        result = run_bench(artifact, options.with_peers() if peers else options)
    click.echo(format_table(result))
    for path, write in ((json_path, write_json), (csv_path, write_csv), (plot_path, write_plot)):
        if path:
            write(result, path)
            click.echo(f"wrote {path}")
    if publish_path:
        check_publishable(result)
        write_markdown(result, publish_path)
        click.echo(f"wrote {publish_path}")
