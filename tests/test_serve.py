"""`vitdeploy serve` on a real Ray Serve app (2 replicas, loopback), its client and its wire format.

One server for the module (about 15 s to start); every load is bounded in count and time. Responses are
compared with the same runtime called directly: rows computed in a batch of another size may differ in
the last bits (the tests allow 1e-5, as tests/test_api.py does for batch mates).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vitdeploy
from conftest import requires
from vitdeploy.cli import main
from vitdeploy.description import BatchRange
from vitdeploy.errors import VitdeployError
from vitdeploy.serve import Client, wire
from vitdeploy.serve.app import check_port
from vitdeploy.serve.batching import serving_batch

# Not importorskip: Ray must not be imported before vitdeploy.serve.cluster sets its single-machine mode.
pytestmark = requires("ray")

BACKEND = "onnxruntime_cpu"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, body: bytes, media: str | None, path: str = "/v1/infer", method: str = "POST"):
    """One raw request: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": media} if media else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(vit_tiny_dynamic_artifact: Path):
    """`vitdeploy serve` as a user starts it: 2 replicas of one thread, batches of up to 3, a 1 MiB body limit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vitdeploy.cli", "serve", str(vit_tiny_dynamic_artifact), "--replicas", "2",
         "--max-batch", "3", "--batch-wait-ms", "20", "--backend", BACKEND, "--threads", "1", "--port", str(port),
         "--max-body-mb", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(line.startswith("serving ") for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"vitdeploy serve did not start: {process.stderr.read()[-3000:]}")
        time.sleep(0.2)
    ready = next(line for line in lines if line.startswith("serving "))
    assert "Ray cluster 127.0.0.1:" in ready  # every Ray process on loopback
    yield {"port": port, "process": process, "ready": ready,
           "ray_address": re.search(r"Ray cluster (\S+);", ready).group(1)}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def direct(vit_tiny_dynamic_artifact: Path):
    with vitdeploy.load(vit_tiny_dynamic_artifact, backend=BACKEND, threads=1) as model:
        yield model


def assert_same(got, expected) -> None:
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape and got[name].dtype == expected[name].dtype == np.float32
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5)


def images(tmp_path: Path) -> list:
    """Requests of three preprocessed sizes: PNG and JPEG files, uint8 arrays, float32 batches of 2."""
    rng = np.random.default_rng(3)
    items: list = []
    for i in range(6):
        path = tmp_path / (f"image{i}.png" if i % 2 else f"image{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        items.append(path)
    items += [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(6)]
    items += [rng.standard_normal((2, 3, 32, 48)).astype(np.float32) for _ in range(4)]
    return items


def test_wire_format_round_trip_and_layout():
    arrays = {"block0": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "embedding": np.ones((2, 5), np.float16),
              "empty": np.zeros((0, 3), np.uint8)}
    message = wire.encode(arrays, {"replica": "r1"})
    assert message[:8] == b"VDARRAYS"
    length = int.from_bytes(message[8:12], "little")
    header = json.loads(message[12:12 + length])
    assert (12 + length) % 64 == 0 and all(entry["offset"] % 64 == 0 for entry in header["arrays"])
    assert [(e["name"], e["dtype"], e["shape"]) for e in header["arrays"]] == [
        ("block0", "float32", [2, 3, 4]), ("embedding", "float16", [2, 5]), ("empty", "uint8", [0, 3])]
    start = 12 + length  # decodable with json + pointer arithmetic alone, as README shows
    first = header["arrays"][0]
    raw = np.frombuffer(message[start + first["offset"]:start + first["offset"] + first["nbytes"]], "<f4")
    np.testing.assert_array_equal(raw.reshape(first["shape"]), arrays["block0"])
    decoded, meta = wire.decode(bytearray(message))
    assert meta == {"replica": "r1"} and list(decoded) == list(arrays)
    for name in arrays:
        np.testing.assert_array_equal(decoded[name], arrays[name])
        assert decoded[name].dtype == arrays[name].dtype
    assert decoded["block0"].flags.writeable


@pytest.mark.parametrize(("message", "reason"), [
    (b"GIF89a", "it does not start with 'VDARRAYS'"),
    (b"VDARRAYS\xff\x00\x00\x00{}", "its header is 255 bytes but the message has 14 bytes (truncated?)"),
    (b"VDARRAYS\x02\x00\x00\x00{]", "its header is not JSON"),
    (wire.encode({"x": np.zeros(4, np.float32)})[:-4], "array 'x' ends at byte 16 of data, but only 12 bytes follow"),
])
def test_wire_format_defects_are_one_line(message: bytes, reason: str):
    with pytest.raises(VitdeployError) as caught:
        wire.decode(message)
    assert str(caught.value).startswith(f"malformed {wire.MEDIA_TYPE} message: {reason}")
    assert "\n" not in str(caught.value)


def test_concurrent_requests_equal_direct_runtime(server, direct, tmp_path: Path):
    """24 concurrent requests of three sizes: each answer equals the direct runtime's output; requests were
    batched, and both replicas served."""
    client = Client(f"http://127.0.0.1:{server['port']}")
    items = images(tmp_path)
    items += items[6:14]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(client.send, items))
    for item, (arrays, meta) in zip(items, answers):
        expected = direct.infer(item)
        assert_same(arrays, expected)
        assert meta["input"] == list(direct.batch(item).shape)
    assert max(meta["batch"] for _, meta in answers) > 1, "no request was batched with another"
    assert len({meta["replica"] for _, meta in answers}) == 2
    assert all(meta["batch"] <= 3 for _, meta in answers)
    # The Pyramid of a list (sent concurrently, joined) and of a path equal Model.infer's.
    paths = items[:4]
    got = client.infer(paths)
    assert_same(got, direct.infer(paths))
    assert [level.name for level in got.levels] == [level.name for level in direct.levels]
    assert_same(client.infer(str(paths[1])), direct.infer(str(paths[1])))
    batch = np.concatenate([items[-1], items[-2]])  # 4 images: more than --max-batch, so two requests
    assert_same(client.infer(batch), direct.infer(batch))
    with pytest.raises(VitdeployError, match=r"^images preprocess to different sizes \['64x64', '64x96'\]"):
        client.infer([paths[0], items[6]])


def test_metadata_and_health(server, vit_tiny_dynamic_artifact: Path):
    client = Client(f"http://127.0.0.1:{server['port']}")
    metadata = client.metadata()
    assert metadata["description"] == vitdeploy.load(vit_tiny_dynamic_artifact, BACKEND).artifact.description.to_dict()
    assert (metadata["backend"], metadata["max_batch"], metadata["batch_wait_ms"], metadata["wire"]) == \
        (BACKEND, 3, 20.0, wire.MEDIA_TYPE)
    health = client.health()
    assert health["status"] == "ok" and health["backend"] == BACKEND


def _array(array: np.ndarray) -> bytes:
    return wire.encode({"image": array})


@pytest.mark.parametrize(("body", "media", "status", "reason"), [
    (b"hello, not a picture", "image/png", 400, "request body is not a readable image: expected a PNG or JPEG file"),
    (b"hello", "text/plain", 415, "content type 'text/plain': expected image/png, image/jpeg or "
                                  "application/x-vitdeploy-arrays"),
    (b"hello", None, 415, "content type 'none': expected image/png"),
    (b"\0" * (1024 * 1024 + 1), "image/jpeg", 413, "request body is 1048577 bytes: this server takes at most 1048576 "
                                                   "bytes (vitdeploy serve --max-body-mb)"),
    (b"", "image/png", 400, "request body is empty"),
    (b"VDARRAYS\x10\x00\x00\x00not json at all!", wire.MEDIA_TYPE, 400,
     "malformed application/x-vitdeploy-arrays message: its header is not JSON"),
    (_array(np.zeros((64, 64, 4), np.uint8)), wire.MEDIA_TYPE, 422,
     "image array has dtype uint8 and shape [64, 64, 4]: expected uint8 [height, width, 3] RGB"),
    (_array(np.zeros((1, 3, 50, 50), np.float32)), wire.MEDIA_TYPE, 422,
     "input 'image': size 50x50 is not a multiple of 16 (the backbone's size rule)"),
    (_array(np.zeros((4, 64, 64, 3), np.uint8)), wire.MEDIA_TYPE, 422,
     "request holds 4 images: this server runs at most 3 per call (vitdeploy serve --max-batch); send fewer"),
    (_array(np.zeros((5, 64, 64, 3), np.uint8)), wire.MEDIA_TYPE, 422,  # the declared batch, before any work
     "request holds 5 images: this server runs at most 3 per call (vitdeploy serve --max-batch); send fewer"),
])
def test_malformed_requests_get_a_4xx_with_one_line(server, direct, body: bytes, media: str | None, status: int,
                                                     reason: str):
    got, answer = post(server["port"], body, media)
    assert got == status
    error = json.loads(answer)["error"]
    assert error.startswith(reason) and "\n" not in error
    image = np.full((64, 64, 3), 7, np.uint8)  # the server goes on serving
    got, answer = post(server["port"], _array(image), wire.MEDIA_TYPE)
    assert got == 200
    assert_same(wire.decode(answer)[0], direct.infer(image))


def test_wrong_route_and_method(server):
    assert post(server["port"], b"", None, "/v2/infer")[0] == 404
    status, answer = post(server["port"], b"", None, "/v1/infer", method="GET")
    assert status == 405 and json.loads(answer)["error"] == "GET /v1/infer: expected POST /v1/infer"
    client = Client(f"http://127.0.0.1:{server['port']}")
    with pytest.raises(VitdeployError, match=r"/v1/infer refused the request \(HTTP 422\): image array has dtype "
                                             r"uint8 and shape \[8, 8\]"):
        client.infer(np.zeros((8, 8), np.uint8))


def test_port_in_use_and_missing_artifact_are_one_line(server, vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    port = server["port"]
    result = CliRunner().invoke(main, ["serve", str(vit_tiny_dynamic_artifact), "--port", str(port)])
    assert result.exit_code == 1
    assert result.output == (f"Error: port {port} on 127.0.0.1 is in use: stop what listens there or choose another "
                             "with --port\n")
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.output.splitlines()[-1].endswith("does not exist.")
    result = CliRunner().invoke(main, ["serve", str(tmp_path)])
    assert result.exit_code == 1 and result.output == (f"Error: {tmp_path} is not a vitdeploy artifact: expected "
                                                       "vitdeploy.json and model.onnx in it\n")


def test_batch_outside_the_artifact_range_is_one_line(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    """serve, serve-bench and extract take their batch by one rule (serving_batch), before Ray starts."""
    art, image_dir = str(vit_tiny_dynamic_artifact), tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image_dir / "black.png")
    for args, option in ((["serve", art, "--max-batch", "9"], "--max-batch"),
                         (["serve-bench", art, "--max-batch", "9"], "--max-batch"),
                         (["extract", art, str(image_dir), "-o", str(tmp_path / "out"), "--batch", "9"], "--batch")):
        result = CliRunner().invoke(main, args)
        assert (result.exit_code, result.output) == (1, f"Error: {option}: batch 9 is outside the artifact's batch "
                                                        "range 1..4\n"), args
    assert not (tmp_path / "out").exists()
    assert serving_batch(BatchRange(1, 1, 32), None, "--batch") == 8
    assert serving_batch(BatchRange(1, 1, 4), None, "--batch") == 4
    with pytest.raises(VitdeployError) as error:
        serving_batch(BatchRange(2, 2, 4), 2, "--max-batch")
    assert str(error.value) == ("--max-batch: the artifact takes batches of 2..4, but a server's or extractor's calls "
                                "may hold a single image: expected a batch range from 1 (the recipe's input.batch)")


def test_size_is_one_hxw_checked_before_ray(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    """serve-bench's and extract's --size is one HxW, parsed by click and checked against the size rule."""
    art, image_dir = str(vit_tiny_dynamic_artifact), tmp_path / "images"
    image_dir.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image_dir / "black.png")
    for command in (["serve-bench", art], ["extract", art, str(image_dir), "-o", str(tmp_path / "out")]):
        result = CliRunner().invoke(main, [*command, "--size", "64x64,96x96"])
        assert result.exit_code == 2 and result.output.splitlines()[-1] == (
            "Error: Invalid value for '--size': expected one HxW size such as 256x320, got '64x64,96x96'"), command
        result = CliRunner().invoke(main, [*command, "--size", "64x72"])
        assert (result.exit_code, result.output) == (
            1, "Error: --size 64x72: size 64x72 is not a multiple of 16 (the backbone's size rule)\n"), command
    assert not (tmp_path / "out").exists()


def test_without_ray_one_line_names_the_extra(vit_tiny_dynamic_artifact: Path, monkeypatch: pytest.MonkeyPatch):
    import vitdeploy.optional as optional

    monkeypatch.setattr(optional, "is_installed", lambda module: module != "ray")
    result = CliRunner().invoke(main, ["serve", str(vit_tiny_dynamic_artifact), "--port", str(free_port())])
    assert result.exit_code == 1 and result.output == "Error: ray is not installed: pip install 'vitdeploy[serve]'\n"


KILL_REPLICA = """
import json, os, sys, time
os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token")
import ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="error")
def replicas():
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_REPLICA::")]
    return names, serve.status().applications["vitdeploy"].deployments["vitdeploy"].replica_states
before, _ = replicas()
print(json.dumps({"killed": before[0]}), flush=True)
sys.stdin.readline()  # the test says when its load is running
ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    names, states = replicas()
    if before[0] not in names and states == {"RUNNING": 2}:
        break
    time.sleep(0.5)
print(json.dumps({"replicas": names, "states": states}), flush=True)
"""


def test_killed_replica_is_replaced_and_no_request_is_lost(server, direct):
    """A replica killed with ray.kill under load: Serve replaces it; every request succeeds, some after the
    client's documented retry."""
    client = Client(f"http://127.0.0.1:{server['port']}", retries=4, backoff_s=0.25)
    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = direct.infer(image)
    killer = subprocess.Popen([sys.executable, "-c", KILL_REPLICA, server["ray_address"]], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    victim = json.loads(killer.stdout.readline())["killed"].rsplit("#", 1)[1]
    stop, answers, failures = time.monotonic() + 180, [], []  # a cap; the load ends when `done` is set

    def load() -> None:
        while time.monotonic() < stop and not done.is_set():
            try:
                answers.append(client.send(image))
            except VitdeployError as exc:
                failures.append(str(exc))

    done = threading.Event()
    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    killer.stdin.write("go\n")
    killer.stdin.flush()
    after = json.loads(killer.stdout.readline())
    deadline = time.monotonic() + 90  # until the replacement has served too (seconds; longer on a loaded CPU)
    while len({meta["replica"] for _, meta in answers}) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    for worker in workers:
        worker.join(timeout=60)
    killer.wait(timeout=30)
    assert after["states"] == {"RUNNING": 2} and not any(victim in name for name in after["replicas"])
    assert failures == []
    assert len(answers) > 20
    for arrays, _ in answers:
        assert_same(arrays, expected)
    served_by = {meta["replica"] for _, meta in answers}
    assert victim in served_by and len(served_by) == 3  # the victim, the survivor and the replacement
    # Whether a request was on the victim when it died is timing (Serve's router may also resend it itself);
    # the client's retry path is tested on its own below.


def test_client_retries_then_says_what_failed():
    """Nothing listens on the port: every attempt is refused, each is retried with backoff, then one line."""
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(VitdeployError, match=rf"^http://127.0.0.1:{port}/v1/health failed 3 times \(last: "
                                             r"ConnectionRefusedError: .*\): is the server running\? "
                                             r"\(vitdeploy serve\)$"):
        client.health()
    assert client.retried == 2 and time.monotonic() - started >= 0.05 + 0.1  # 0.05 s, then twice as long


def test_sigterm_shuts_down_cleanly(server):
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    stderr = process.stderr.read()
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped by SIGTERM: shutting down" in stderr and "stopped: Ray Serve is shut down" in stderr
    assert "Traceback" not in stderr
    check_port("127.0.0.1", server["port"])  # the port is free again
