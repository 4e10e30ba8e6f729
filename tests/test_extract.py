"""`vitdeploy extract` on Ray Data: shards, index, interrupt and resume.

Two real runs, each a subprocess as a user starts it, joining (`--address`) a Ray cluster on loopback that
this module starts once: one interrupted with SIGINT once its first shard is written, one resuming it.
Features are compared with the same runtime called directly (rows computed in batches of other sizes may
differ in the last bits: 1e-5, as elsewhere).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vitdeploy
from conftest import INTERRUPTIBLE_CLI, requires
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.preprocess import preprocess
from vitdeploy.serve.cluster import SINGLE_MACHINE, ray_cluster
from vitdeploy.serve.extract import ExtractOptions, ShardExtractor

# Not importorskip: Ray must not be imported before vitdeploy.serve.cluster sets its single-machine mode.
pytestmark = requires("ray")

BACKEND = "onnxruntime_cpu"
IMAGES = 48


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 small photos of three sizes, a file that is no image and a truncated JPEG."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (48 + 16 * (i % 3), 64, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "notes.png").write_text("not a picture")
    (folder / "cut.jpg").write_bytes((folder / "000.png").read_bytes()[:64])
    return folder


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster (2 CPUs, loopback) for the module's runs to join: its address."""
    with ray_cluster(None, 2) as ray:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")  # every Ray process on loopback
        yield address


def run_extract(*args: str) -> subprocess.Popen:
    # Ray asks a driver that joins a cluster by address to opt into the cluster's token authentication, and
    # without its single-machine mode would turn 127.0.0.1 into the machine's network address.
    return subprocess.Popen([*INTERRUPTIBLE_CLI, "extract", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "token",
                                 SINGLE_MACHINE[0]: SINGLE_MACHINE[1]})


def test_interrupted_extraction_leaves_whole_shards_and_resumes(vit_tiny_dynamic_artifact: Path, image_dir: Path,
                                                                 cluster: str, tmp_path: Path):
    out = tmp_path / "features"
    listing = tmp_path / "more.txt"
    listing.write_text(f"{image_dir / '000.png'}\n{tmp_path / 'gone.png'}\n")  # a duplicate and a missing file
    args = [str(vit_tiny_dynamic_artifact), str(image_dir), "--list", str(listing), "-o", str(out), "--shard-size",
            "2", "--actors", "1", "--threads", "1", "--backend", BACKEND, "--address", cluster]
    first = run_extract(*args)
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.npz")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-3000:]
    assert stderr.splitlines()[-1] == "Error: stopped by SIGINT: nothing half-written was left behind"
    names = sorted(p.name for p in out.iterdir())
    shards = [name for name in names if name.startswith("shard-")]
    assert names == ["extract.json", "index.jsonl", *shards]  # no temporaries, no partial shard
    total = -(-(IMAGES + 3) // 2)
    assert 1 <= len(shards) < total, "the interrupt came after the last shard"
    for name in shards:
        with np.load(out / name) as data:
            assert len(data["path"]) + len(data["error_path"]) == 2 or name == f"shard-{total - 1:05d}.npz"
    assert len((out / "index.jsonl").read_text().splitlines()) == sum(
        len(np.load(out / name)["path"]) + len(np.load(out / name)["error_path"]) for name in shards)

    second = run_extract(*args)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-3000:]
    assert stdout.strip() == (f"wrote {out}/: {IMAGES + 3} images in {total} shards ({total - len(shards)} written "
                              f"now, {len(shards)} already complete); {IMAGES} extracted, 3 unreadable (listed in "
                              f"{out}/index.jsonl); per image: block0 [192, 4, 4], block1 [192, 4, 4]")
    for name in shards:  # what the first run finished was not rewritten
        assert (out / name).stat().st_mtime < (out / "index.jsonl").stat().st_mtime

    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [entry["path"] for entry in index] == sorted(str(p) for p in image_dir.iterdir()) + [str(tmp_path / "gone.png")]
    errors = {Path(entry["path"]).name: entry["error"] for entry in index if "error" in entry}
    assert errors == {"notes.png": f"{image_dir / 'notes.png'} is not a readable image: expected a PNG or JPEG file",
                      "cut.jpg": f"{image_dir / 'cut.jpg'} could not be decoded (image file is truncated): expected "
                                 "a valid PNG or JPEG file",
                      "gone.png": f"image {tmp_path / 'gone.png'} does not exist: expected a PNG or JPEG file"}
    spec = load_artifact(vit_tiny_dynamic_artifact).input
    spec = replace(spec, mode="fixed", min_hw=spec.opt_hw, max_hw=spec.opt_hw)  # every image at the export size
    with vitdeploy.load(vit_tiny_dynamic_artifact, backend=BACKEND, threads=1) as model:
        for entry in index:
            if "row" in entry:
                expected = model.infer(preprocess(entry["path"], spec)[0])
                with np.load(out / f"shard-{entry['shard']:05d}.npz") as data:
                    assert data["path"][entry["row"]] == entry["path"]
                    for level in ("block0", "block1"):
                        np.testing.assert_allclose(data[level][entry["row"]], expected[level][0], rtol=0, atol=1e-5)

    result = CliRunner().invoke(main, ["extract", *args])  # nothing left to do: no Ray at all
    assert result.exit_code == 0 and f"(0 written now, {total} already complete)" in result.output
    result = CliRunner().invoke(main, ["extract", *args, "--levels", "block1"])
    assert result.exit_code == 1 and result.output == (f"Error: {out} holds another extraction (levels differ): use "
                                                       "another -o, or --force to replace it\n")


def test_pooled_shard_holds_means_and_lists_errors(vit_small_artifact: Path, tmp_path: Path):
    """One shard as an actor computes it (no Ray needed): pooled levels are spatial means, the embedding as is."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(paths[-1])
    paths.insert(1, str(tmp_path / "missing.png"))
    artifact = load_artifact(vit_small_artifact)
    options = ExtractOptions(levels=("block2", "embedding"), pool=True, backend=BACKEND)
    extractor = ShardExtractor(str(vit_small_artifact), options, artifact.input,
                               {"block2": [384], "embedding": [384]}, batch=2)
    with np.load(__import__("io").BytesIO(extractor.shard(paths))) as data:
        assert sorted(data.files) == ["block2", "embedding", "error", "error_path", "path"]
        assert data["path"].tolist() == [paths[0], *paths[2:]]
        assert data["error"].tolist() == [f"image {paths[1]} does not exist: expected a PNG or JPEG file"]
        expected = extractor.model.infer([paths[0], *paths[2:]])
        np.testing.assert_allclose(data["block2"], expected["block2"].mean(axis=(2, 3)), rtol=0, atol=1e-5)
        np.testing.assert_allclose(data["embedding"], expected["embedding"], rtol=0, atol=1e-5)
        assert data["block2"].shape == (3, 384) and data["block2"].dtype == np.float32


def test_without_ray_one_line_names_the_extra(vit_tiny_dynamic_artifact: Path, image_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    import vitdeploy.optional as optional

    monkeypatch.setattr(optional, "is_installed", lambda module: module != "ray")
    result = CliRunner().invoke(main, ["extract", str(vit_tiny_dynamic_artifact), str(image_dir), "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output == "Error: ray is not installed: pip install 'vitdeploy[serve]'\n"
    assert not (tmp_path / "out").exists()
