"""`vitdeploy gpu-proof`: the short GPU run whose record docs/verification.md takes."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from vitdeploy.cli.options import batch_sizes_option

DEFAULT_OUTPUT = Path("docs/gpu_proof")


@click.command("gpu-proof")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help=f"Where gpu_proof.json and gpu_proof.md go [default: {DEFAULT_OUTPUT}; required with --device "
                   "cpu, so a dry run never replaces a GPU's record].")
@click.option("--recipes", default="vit_base,hiera_base", show_default=True,
              help="Comma-separated recipe names or .toml paths, exported with random weights.")
@batch_sizes_option(default="1,32")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cpu: a dry run of every step (the record's format and the refusals), not a measurement.")
@click.option("--skip-pytest", is_flag=True, help="Do not run `python -m pytest -m gpu`.")
@click.option("--budget-s", type=float, default=540, show_default=True,
              help="Seconds for the whole run: a step that would not fit is skipped with that reason.")
def gpu_proof(output_dir: Path | None, recipes: str, batch_sizes: tuple[int, ...], device: str, skip_pytest: bool,
              budget_s: float) -> None:
    """Record what vitdeploy does on this GPU in one short run (docs/gpu_proof/README.md says how to carry
    it to a GPU machine that has torch only): eager fp32, autocast bf16/fp16 and torch.compile baselines with
    TFLOP/s and % of peak, ONNX Runtime CUDA if its wheel is there, a TensorRT-RTX build and load (its success or
    refusal), and `pytest -m gpu`; writes gpu_proof.json and gpu_proof.md after every step.

    \b
    On a GPU machine with torch only, polygraphy's and timm's wheels carried in .whl/ (docs/gpu_proof/README.md):
      python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:. python3 -m vitdeploy.cli gpu-proof --output-dir $OUT/gpu_proof
    """
    from vitdeploy.optional import ensure_installed
    for module in ("torch", "timm"):  # what a GPU machine with torch only is given (docs/gpu_proof/README.md)
        ensure_installed(module)
    from vitdeploy.tools.gpu_proof import ProofOptions, run_proof

    if device == "cpu" and output_dir is None:
        raise click.ClickException("--device cpu is a dry run: give --output-dir, so it does not replace "
                                   f"{DEFAULT_OUTPUT}/gpu_proof.md")
    options = ProofOptions(output_dir=output_dir or DEFAULT_OUTPUT,
                           recipes=tuple(name.strip() for name in recipes.split(",") if name.strip()),
                           batch_sizes=batch_sizes, device=device, pytest=not skip_pytest, budget_s=budget_s)
    command = shlex.join(["vitdeploy", "gpu-proof", "--output-dir", str(options.output_dir), "--recipes", recipes,
                          "--batch-sizes", ",".join(map(str, batch_sizes)), "--device", device,
                          *(["--skip-pytest"] if skip_pytest else []), "--budget-s", f"{budget_s:g}"])
    data = run_proof(options, command)
    for step in data["steps"]:
        click.echo(f"{step['status']:<8} {step['step']:<28} {step['seconds']:>6.1f}s  {step['detail']}")
    click.echo(f"wrote {options.output_dir / 'gpu_proof.json'} and {options.output_dir / 'gpu_proof.md'}")
