"""The runtime half as a user installs it: a fresh venv with `pip install 'vitdeploy[ort,openvino,serve,triton]'`
(a normal install of this checkout, dependencies resolved by pip) has neither torch nor timm, and runs an artifact
that the full install exported: `vitdeploy.load(...).infer(...)`, `vitdeploy build --backend openvino`, `list`,
`doctor`, `extract` (Ray Data), `serve` (Ray Serve on loopback) with the Python client, and `triton`; the export
side says which extra it needs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitdeploy

REPO = Path(__file__).resolve().parents[1]
EXTRAS = "ort,openvino,serve,triton"
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 300  # Ray's local cluster, then the application


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the runtime extras: its bin directory."""
    root = tmp_path_factory.mktemp("runtime") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    # --no-compile: Ray's thousands of modules are compiled when (if ever) they are imported, not all now
    install = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                              f"{REPO}[{EXTRAS}]"],
                             capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=clean_env())
    assert install.returncode == 0, install.stderr[-3000:]
    return root / "bin"


def clean_env() -> dict[str, str]:
    """This environment without the PYTHONPATH that would put the checkout (or the full venv) on the path."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")} | {
        "PYTHONUNBUFFERED": "1"}


def run(venv: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`args[0]` from the runtime venv's bin (python, vitdeploy), from `cwd` (not the checkout)."""
    return subprocess.run([str(venv / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=clean_env())


@pytest.fixture(scope="module")
def artifact(vit_tiny_dynamic_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full install's export, copied where the runtime install may add an engine to it."""
    return Path(shutil.copytree(vit_tiny_dynamic_artifact, tmp_path_factory.mktemp("runtime") / "vit"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(11)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def expected(artifact: Path, image: Path) -> dict[str, np.ndarray]:
    with vitdeploy.load(artifact, backend="onnxruntime_cpu") as model:
        return dict(model.infer(image))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5)


INFER = """
import sys, numpy as np, vitdeploy
with vitdeploy.load(sys.argv[1], backend=sys.argv[2]) as model:
    np.savez(sys.argv[4], **model.infer(sys.argv[3]))
    print(model.backend, model.engine.name if model.engine else "model.onnx")
"""


def test_the_runtime_install_has_no_torch_and_runs_the_artifact(venv: Path, artifact: Path, photos: Path,
                                                               tmp_path: Path):
    missing = run(venv, "python", "-c", "import importlib.util as u; print([m for m in ('torch', 'timm') "
                                        "if u.find_spec(m)])", cwd=tmp_path)
    assert missing.stdout.strip() == "[]", missing.stderr
    want = expected(artifact, photos / "0.png")
    onnx = run(venv, "python", "-c", INFER, str(artifact), "onnxruntime_cpu", str(photos / "0.png"),
               str(tmp_path / "ort.npz"), cwd=tmp_path)
    assert onnx.stdout.strip() == "onnxruntime_cpu model.onnx", onnx.stderr[-3000:]
    assert_same(dict(np.load(tmp_path / "ort.npz")), want)

    build = run(venv, "vitdeploy", "build", str(artifact), "--backend", "openvino", cwd=tmp_path)
    assert build.stdout.strip() == str(artifact / "model.openvino.fp32.xml"), build.stderr[-3000:]
    openvino = run(venv, "python", "-c", INFER, str(artifact), "openvino", str(photos / "0.png"),
                   str(tmp_path / "ov.npz"), cwd=tmp_path)
    assert openvino.stdout.strip() == "openvino model.openvino.fp32.xml", openvino.stderr[-3000:]
    assert_same(dict(np.load(tmp_path / "ov.npz")), want)


def test_the_runtime_install_lists_recipes_and_names_the_export_extra(venv: Path, tmp_path: Path):
    listing = run(venv, "vitdeploy", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "hiera_tiny               hiera_tiny_224                    hiera     fixed 224x224" in listing.stdout
    doctor = run(venv, "vitdeploy", "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr
    torch_line = next(line for line in doctor.stdout.splitlines() if line.startswith("torch "))
    assert "missing: not installed: pip install 'vitdeploy[export]'" in torch_line
    for command in (["export", "vit_small"], ["verify", str(tmp_path)], ["bench", "vit_small"],
                    ["list", "--pyramids"], ["quantize", str(tmp_path), "--dynamic"],
                    ["build", str(tmp_path), "--backend", "onnxruntime", "--precision", "int8", "--dynamic"]):
        refused = run(venv, "vitdeploy", *command, cwd=tmp_path)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.strip() == "Error: torch is not installed: pip install 'vitdeploy[export]'", command


def test_the_runtime_install_extracts(venv: Path, artifact: Path, photos: Path, tmp_path: Path):
    out = tmp_path / "features"
    extract = run(venv, "vitdeploy", "extract", str(artifact), str(photos), "-o", str(out), "--backend",
                  "onnxruntime_cpu", "--threads", "1", "--size", "64x96", cwd=tmp_path)  # the photos' own size
    assert extract.returncode == 0, extract.stderr[-3000:]
    assert extract.stdout.startswith(f"wrote {out}/: 3 images in 1 shards")
    with np.load(out / "shard-00000.npz") as shard:
        first = list(shard["path"]).index(str(photos / "0.png"))
        got = {name: shard[name][first] for name in ("block0", "block1")}
    assert_same(got, {name: array[0] for name, array in expected(artifact, photos / "0.png").items()})


CLIENT = """
import sys, numpy as np
from vitdeploy.serve import Client
np.savez(sys.argv[2], **Client(sys.argv[1]).infer(sys.argv[3]))
"""


def test_the_runtime_install_serves_and_its_client_reads(venv: Path, artifact: Path, photos: Path, tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(venv / "vitdeploy"), "serve", str(artifact), "--backend", "onnxruntime_cpu",
                               "--threads", "1", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env())
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(line.startswith("serving ") for line in lines):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"vitdeploy serve did not start: {server.stderr.read()[-3000:]}")
            time.sleep(0.2)
        client = run(venv, "python", "-c", CLIENT, f"http://127.0.0.1:{port}", str(tmp_path / "served.npz"),
                     str(photos / "1.png"), cwd=tmp_path)
        assert client.returncode == 0, client.stderr[-3000:]
        assert_same(dict(np.load(tmp_path / "served.npz")), expected(artifact, photos / "1.png"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0  # stopped cleanly (Ray Serve shut down)

    triton = run(venv, "vitdeploy", "triton", str(artifact), "-o", str(tmp_path / "repo"), cwd=tmp_path)
    assert triton.returncode == 0, triton.stderr[-3000:]
    assert (tmp_path / "repo" / "vit" / "config.pbtxt").is_file()
