"""Nothing half-written is left behind: SIGTERM, SIGKILL leftovers, and a full disk (a real tmpfs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES
from vitdeploy.atomic import remove_stale, temporary_path

TINY = str(RECIPES / "vit_tiny_dynamic.toml")
CLI = [sys.executable, "-m", "vitdeploy.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_export(out: Path) -> subprocess.Popen:
    """`vitdeploy export` of the tiny ViT, returned once it has started writing the ONNX file."""
    process = subprocess.Popen([*CLI, "export", TINY, "--fixed", "-o", str(out)], stderr=subprocess.PIPE,
                               text=True, env=ENV)
    for line in process.stderr:
        if "exporting ONNX" in line:
            time.sleep(0.5)
            return process
    pytest.fail(f"export ended before writing ONNX: {process.communicate()}")


def test_sigterm_during_export_removes_the_staging_directory(tmp_path: Path):
    out = tmp_path / "artifacts" / "vit"
    process = start_export(out)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == "Error: stopped by SIGTERM: nothing half-written was left behind"
    assert list(out.parent.iterdir()) == []


def test_sigkill_leftover_does_not_block_and_is_removed_by_the_next_export(tmp_path: Path):
    out = tmp_path / "artifacts" / "vit"
    process = start_export(out)
    process.kill()
    process.wait(timeout=60)
    leftovers = [p.name for p in out.parent.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".vit.") and leftovers[0].endswith(".partial")
    result = subprocess.run([*CLI, "export", TINY, "--fixed", "-o", str(out)], capture_output=True, text=True,
                            env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["vit"]


def test_stale_temporaries_of_live_or_foreign_writers_stay(tmp_path: Path):
    final = tmp_path / "model.engine"
    mine = temporary_path(final, ".tmp")
    mine.write_bytes(b"x")
    foreign = tmp_path / ".model.engine.otherhost.1.abcd.tmp"
    foreign.write_bytes(b"x")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / mine.name.replace(f".{os.getpid()}.", f".{dead.pid}.")
    stale.write_bytes(b"x")
    assert remove_stale(final, ".tmp") == [stale]
    assert mine.exists() and foreign.exists() and not stale.exists()


def run_on_full_disk(tmp_path: Path, size_kib: int, setup: str, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI with a `size_kib` tmpfs at tmp_path/disk, in a private mount namespace (so no mount
    outlives the test); returns the exit status, stderr and what the disk holds afterwards."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare to mount a small tmpfs in a private namespace")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size={size_kib}k tmpfs "$0" || exit 99; {setup}; "$@" 2>"$0.err"; '
              'echo "status=$?"; cd "$0" && find . -mindepth 1 | sort')
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(disk), *args],
                            capture_output=True, text=True, env=ENV, timeout=300)
    if result.returncode == 99 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {result.stderr.strip()}")
    status, *listing = result.stdout.splitlines()
    return int(status.removeprefix("status=")), (tmp_path / "disk.err").read_text(), listing


def test_disk_full_during_export_is_one_line_and_leaves_nothing(tmp_path: Path):
    status, err, listing = run_on_full_disk(tmp_path, 1024, "true", *CLI, "export", TINY, "--fixed",
                                            "-o", str(tmp_path / "disk" / "vit"))
    assert status == 1
    assert err.splitlines()[-1] == (f"Error: cannot write {tmp_path / 'disk' / 'vit'}: no space left on device: "
                                    "expected free space there (nothing was left behind)")
    assert listing == []


def test_disk_full_while_writing_an_engine_is_one_line_and_leaves_nothing(tmp_path: Path, vit_tiny_dynamic_artifact):
    pytest.importorskip("tensorrt_rtx")
    size_kib = sum(p.stat().st_size for p in vit_tiny_dynamic_artifact.iterdir()) // 1024 + 512
    artifact = tmp_path / "disk" / "vit"
    status, err, listing = run_on_full_disk(
        tmp_path, size_kib, f'cp -r "{vit_tiny_dynamic_artifact}" "{artifact}"',
        *CLI, "build", str(artifact), "--backend", "tensorrt_rtx")
    assert status == 1
    assert err.splitlines()[-1] == (f"Error: cannot write {artifact / 'model.tensorrt_rtx.fp32.engine'}: no space "
                                    "left on device: expected free space there (nothing was left behind)")
    assert listing == ["./vit", *sorted(f"./vit/{p.name}" for p in vit_tiny_dynamic_artifact.iterdir())]
