"""`vitdeploy doctor`: what this machine can run, one line per runtime, and what to install for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import click



@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON, for scripts.")
@click.option("--cpp-demo", type=click.Path(dir_okay=False, path_type=Path),
              help="The vitdeploy_demo to ask for its runtimes [default: cpp_demo/build/vitdeploy_demo of this "
                   "checkout].")
def doctor(as_json: bool, cpp_demo: Path | None) -> None:
    """Say what runs here and why not: torch and its CUDA, the GPU, ONNX Runtime, TensorRT, TensorRT-RTX,
    OpenVINO and the C++ demo, each with the extra to install when it is missing."""
    from vitdeploy.tools.doctor import CPP_DEMO, probe

    environment = probe(cpp_demo or CPP_DEMO)
    click.echo(json.dumps(environment.to_dict(), indent=2) if as_json else "\n".join(environment.lines()))
