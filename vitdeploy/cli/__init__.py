"""The `vitdeploy` command: a thin layer over the library; user mistakes print one line, exit 1.

Each command is a module of this package, imported only when the command line names it (cli/group.py).
Command modules import click and cli/options.py at their top and the library inside the command, so that
`vitdeploy --help`, `list` and usage errors answer at once (`vitdeploy bench-cli` times them).
"""

from __future__ import annotations

import click

from vitdeploy.version import __version__
from vitdeploy.cli.group import LazyGroup

COMMANDS = {  # name -> module:attribute
    "list": "vitdeploy.cli.list_recipes:list_recipes",
    "export": "vitdeploy.cli.export:export",
    "build": "vitdeploy.cli.build:build",
    "quantize": "vitdeploy.cli.quantize:quantize",
    "verify": "vitdeploy.cli.verify:verify",
    "bench": "vitdeploy.cli.bench:bench",
    "bench-sam2": "vitdeploy.cli.bench_sam2:bench_sam2_command",
    "matrix": "vitdeploy.cli.matrix:matrix",
    "doctor": "vitdeploy.cli.doctor:doctor",
    "gpu-proof": "vitdeploy.cli.gpu_proof:gpu_proof",
    "serve": "vitdeploy.cli.serve:serve",
    "serve-bench": "vitdeploy.cli.serve:serve_bench",
    "extract": "vitdeploy.cli.extract:extract",
    "triton": "vitdeploy.cli.triton:triton",
    "fixture": "vitdeploy.cli.fixture:fixture",
    "bench-cli": "vitdeploy.cli.bench_cli:bench_cli",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="vitdeploy")
def main() -> None:
    """Export timm vision backbones as ONNX, TensorRT and OpenVINO artifacts with named, verified pyramids."""
