"""The command line as a user types it: exact output lines, one-line errors, exit codes."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import save_file

from conftest import INTERRUPTIBLE_CLI
from vitdeploy import families
from vitdeploy.cli import main
from vitdeploy.models import Weights, create_model


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_list_shows_recipes():
    result = run("list")
    assert result.exit_code == 0
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0] == "recipe timm model family resolution"
    assert "hiera_base hiera_base_224 hiera fixed 224x224" in lines
    assert "sam2.1_hiera_large sam2_hiera_large sam2 fixed 1024x1024" in lines


def test_list_shows_pyramids():
    result = run("list", "--pyramids")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["recipe", "timm", "model", "resolution", "outputs", "(name:", "channels@stride)"]
    assert ("hiera_base hiera_base_224 fixed 224x224 stride4:96 stride8:192 stride16:384 stride32:768"
            in [" ".join(line.split()) for line in lines])
    assert ("vit_base vit_base_patch16_224 fixed 224x224 block2:768@16 block5:768@16 block8:768@16 block11:768@16"
            in [" ".join(line.split()) for line in lines])
    assert ("sam2.1_hiera_large sam2_hiera_large fixed 1024x1024 stride4:256 stride8:256 stride16:256"
            in [" ".join(line.split()) for line in lines])  # the neck's channels, not the trunk's 144..1152


@pytest.mark.parametrize("args, message", [
    (["export", "hiera_giant"], "Error: 'hiera_giant' is neither a recipe nor a timm model (timm "),
    (["export", "hiera_tiny", "--outputs", "0,4"],
     "Error: output index 4 is out of range for hiera_tiny_224: it has 4 feature levels (valid indices 0..3)"),
    (["export", "vit_small", "--outputs", "2,12"],
     "Error: output index 12 is out of range for vit_small_patch16_224: it has 12 blocks (valid indices 0..11)"),
    (["export", "vit_small", "--size", "100x100"],
     "Error: recipe 'vit_small' for vit_small_patch16_224: size 100x100 is not a multiple of 16 "
     "(the backbone's size rule)"),
    (["export", "vit_small", "--size", "224,224"],
     "Invalid value for '--size': expected one HxW size such as 256x320, got '224,224'"),
    (["export", "hiera_tiny", "--outputs", "a,b"], "Invalid value for '--outputs': expected comma-separated integers"),
    (["export", "hiera_tiny", "--checkpoint", "/nonexistent.safetensors"], "does not exist"),
    (["verify", "/nonexistent"], "does not exist"),
])
def test_user_mistakes_get_one_line(tmp_path: Path, args: list[str], message: str):
    result = CliRunner().invoke(main, args + (["-o", str(tmp_path / "out")] if args[0] == "export" else []))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_unreadable_checkpoint(tmp_path: Path):
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"not a checkpoint")
    result = run("export", "vit_small", "--checkpoint", str(bad), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (f"Error: cannot read checkpoint {bad}: "
                                              "Error while deserializing header: header too large")
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(vit_small_artifact: Path):
    result = run("export", "vit_small", "-o", str(vit_small_artifact))
    assert result.exit_code == 1
    assert result.output.strip().endswith(f"output directory {vit_small_artifact} already exists: "
                                          "pass --force to replace it")


def test_verify_rejects_corrupt_and_truncated_onnx(vit_small_artifact: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(vit_small_artifact, copy)
    onnx_path = copy / "model.onnx"
    size = onnx_path.stat().st_size
    onnx_path.write_bytes(onnx_path.read_bytes()[: size // 2])
    result = run("verify", str(copy))
    assert result.exit_code == 1
    assert result.output == (f"Error: {onnx_path} is {size // 2} bytes, truncated: expected {size} bytes (interrupted "
                             "copy?); re-export the artifact\n")
    result = run("verify", str(onnx_path))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {onnx_path} is not a readable ONNX file (corrupt or truncated?)")


def test_checkpoint_export_and_verify(tmp_path: Path):
    """Local weights are recorded by path and hash, and verify rebuilds the reference from them."""
    weights = create_model("vit_small_patch16_224", {"dynamic_img_size": True}, Weights("random", seed=7),
                           img_size=(32, 32), family=families.get("vit"))[0].state_dict()
    checkpoint = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(checkpoint))
    out = tmp_path / "vit"
    result = run("export", "vit_small", "--size", "32x32", "--outputs", "11", "--checkpoint", str(checkpoint),
                 "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == [
        "input  image: [B, 3, H, W] float32 (normalised), H x W = 32x32, batch 1..32",
        "output block11: [B, 384, H/16, W/16]"]
    result = run("verify", str(out), "--batch-sizes", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"parity passed: 1 checks within tolerance; report: {out}/verify_report.json"
    other = tmp_path / "other.pt"
    torch.save({k: v + 1 for k, v in weights.items()}, other)
    result = run("verify", str(out), "--checkpoint", str(other))
    assert result.exit_code == 1
    assert "differ from the exported ones (sha256 mismatch)" in result.output


def test_interrupted_export_leaves_nothing(tmp_path: Path):
    """Ctrl-C during the ONNX export: no artifact directory and no partial files remain."""
    out = tmp_path / "artifacts" / "vit"
    process = subprocess.Popen([*INTERRUPTIBLE_CLI, "export", "vit_small", "--size", "64x64",
                                "-o", str(out)], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stderr:
        if "exporting ONNX" in line:
            time.sleep(1.0)
            process.send_signal(signal.SIGINT)
            break
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_library_warning_during_a_command_is_shown_not_raised():
    """warnings calls showwarning with `file` and `line`: the CLI's hook must take both (a TensorRT-RTX
    DeprecationWarning inside a build once surfaced as a SystemError)."""
    import warnings

    import click

    from vitdeploy.cli.group import LazyGroup

    @click.group(cls=LazyGroup, lazy_commands={})
    def group() -> None:
        pass

    @group.command()
    def warn() -> None:
        warnings.warn("from a library", UserWarning)
        click.echo("still running")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = CliRunner().invoke(group, ["warn"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "still running\n" and "UserWarning: from a library" in result.stderr
