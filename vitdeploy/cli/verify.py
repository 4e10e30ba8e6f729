"""`vitdeploy verify ARTIFACT`: per-output parity against eager PyTorch; exit 1 on any failure."""

from __future__ import annotations

from pathlib import Path

import click

from vitdeploy.cli.options import batch_sizes_option, precision_option, seed_option


@click.command()
@click.argument("artifact", type=click.Path(exists=True, path_type=Path))
@batch_sizes_option(help="Batch sizes to check, within the artifact's batch range [default: those of 1,2,4 within it].")
@seed_option()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Weights to rebuild the reference from, if not where the export found them.")
@click.option("--cuda", is_flag=True, help="Run ONNX Runtime with the CUDA provider (vitdeploy[ort-gpu]).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="int8: photos not used for calibration to judge it on [default: those held out by quantize].")
@precision_option(default="fp32", choices=("fp32", "fp16", "bf16"),
                  help="fp16/bf16: the reduced-precision graph TensorRT builds from, run by ONNX Runtime on the CPU, "
                       "at the recipe's fp16/bf16 tolerance.")
def verify(artifact: Path, batch_sizes: tuple[int, ...] | None, seed: int, checkpoint: Path | None, cuda: bool,
           images: Path | None, precision: str) -> None:
    """Compare ARTIFACT (a directory, a vitdeploy .onnx, or an engine: .engine, OpenVINO .xml, AOTInductor .pt2,
    int8 .onnx) with eager PyTorch, output by output. Needs vitdeploy[export] (the eager reference)."""
    from vitdeploy.optional import ensure_export
    ensure_export()
    from vitdeploy.artifact import REPORT_FILE, ArtifactDirectory, load_artifact
    from vitdeploy.sam2.graph import DECODER_DESCRIPTION
    from vitdeploy.engine import Engine, engine_description_path
    from vitdeploy.verify import verify_engine, verify_onnx, verify_reduced_precision

    batches = None if batch_sizes is None else list(batch_sizes)
    if precision != "fp32":
        loaded = load_artifact(artifact)
        report, kept_fp32 = verify_reduced_precision(loaded, precision, batches, seed=seed, checkpoint=checkpoint)
        name = loaded.name
        where = f"; report: {loaded.directory / f'verify_report.{precision}.json'}" if loaded.directory else ""
        for kept in kept_fp32["nodes"]:
            click.echo(f"kept fp32: {kept['node']} ({kept['op']}): {kept['why']}, max |value| {kept['max_abs']:.4g}")
    elif engine_description_path(artifact).is_file():
        report = verify_engine(Engine.at(artifact), batches, seed=seed, checkpoint=checkpoint, images=images)
        name, where = artifact.name, f"; report: {artifact}.verify.json"
    else:
        loaded = load_artifact(artifact)
        if isinstance(loaded, ArtifactDirectory) and (loaded.directory / DECODER_DESCRIPTION).is_file():
            from vitdeploy.sam2.verify import verify_with_decoder  # SAM2: its decoder graph vs Meta's predictor

            report = verify_with_decoder(loaded, cuda, batches, seed=seed, checkpoint=checkpoint)
        else:
            report = verify_onnx(loaded, cuda, batches, seed=seed, checkpoint=checkpoint)
        name, where = loaded.name, f"; report: {loaded.directory / REPORT_FILE}" if loaded.directory else ""
    click.echo(f"{name}: {report.candidate} vs {report.reference}, {report.precision}, seed {seed}")
    click.echo(report.table())
    failed = sum(not check.passed for check in report.checks)
    if failed:
        raise click.ClickException(f"parity FAILED: {failed} of {len(report.checks)} checks out of tolerance{where}")
    click.echo(f"parity passed: {len(report.checks)} checks within tolerance{where}")
