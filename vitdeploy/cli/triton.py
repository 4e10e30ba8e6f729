"""`vitdeploy triton ARTIFACT -o REPO`: a Triton Inference Server model repository (vitdeploy.serve.triton)."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import TRITON, backend_option, precision_option


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "repo", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The model repository (created if needed); the model goes in REPO/NAME.")
@backend_option(TRITON, default="onnxruntime", help="onnxruntime: the ONNX file; tensorrt: a full TensorRT engine; "
                                                   "openvino: an OpenVINO IR engine.")
@click.option("--name", help="The model name [default: the artifact directory's name].")
@precision_option()
@click.option("--instances", type=click.IntRange(1), default=1, show_default=True, help="instance_group count.")
@click.option("--kind", type=click.Choice(["auto", "cpu", "gpu"]),
              help="instance_group kind [default: gpu for tensorrt, cpu for openvino, auto for onnxruntime].")
@click.option("--batch-wait-ms", type=click.FloatRange(0), default=1.0, show_default=True,
              help="dynamic_batching max_queue_delay.")
@click.option("--force", is_flag=True, help="Replace an existing REPO/NAME.")
def triton(artifact: Path, repo: Path, backend: str, name: str | None, precision: str | None, instances: int,
           kind: str | None, batch_wait_ms: float, force: bool) -> None:
    """Write ARTIFACT as a Triton model: REPO/NAME/config.pbtxt and REPO/NAME/1/<model files>."""
    from vitdeploy.serve.triton import write_repository

    model_dir = write_repository(artifact, repo, backend, name, precision, instances, kind, batch_wait_ms, force)
    files = ", ".join(sorted(path.name for path in (model_dir / "1").iterdir()))
    click.echo(f"wrote {model_dir}/: config.pbtxt, 1/{{{files}}}, vitdeploy.json")
    click.echo((model_dir / "config.pbtxt").read_text().rstrip())
    click.echo("(no Triton server was run: the config was checked against the model's IO, not loaded)")
