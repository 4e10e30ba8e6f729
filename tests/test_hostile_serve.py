"""`vitdeploy serve` under hostile requests (docs/security.md), on loopback: one server for the module, started
as a user starts it with a bearer token, the default 32 MiB body limit and a 1 s body timeout.

Each hostile request of the issue's kinds is refused (or served) cheaply: the status and one-line reason, an
answer within HOSTILE_ANSWER_S, and the replica's peak resident memory (VmHWM) grows by no more than the bound
the server states in /v1/metadata. Stalled uploads do not stop honest clients. Bounded in count and time.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import requires
from vitdeploy.cli import main
from vitdeploy.serve import Client, wire

pytestmark = requires("ray")

BACKEND = "onnxruntime_cpu"
TOKEN = "hostile-test-token"
HOSTILE_ANSWER_S = 3.0  # the issue asks for a second; the margin is for a loaded 2-vCPU machine
STALLED = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FromAddress(http.client.HTTPConnection):
    """A connection from another loopback address (127.0.0.2): another client, as the server sees it."""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), self.timeout, source_address=("127.0.0.2", 0))


def request(port: int, body: bytes | None, media: str | None, path: str = "/v1/infer", token: str | None = TOKEN,
            connection=http.client.HTTPConnection, headers: dict | None = None) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one request."""
    started = time.monotonic()
    client = connection("127.0.0.1", port, timeout=60)
    try:
        sent = dict(headers or {}, **({"Content-Type": media} if media else {}),
                    **({"Authorization": f"Bearer {token}"} if token else {}))
        client.request("POST" if body is not None else "GET", path, body=body, headers=sent)
        response = client.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        client.close()


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def replica_pid(server_pid: int) -> int:
    replicas = [pid for pid in descendants(server_pid)
                if Path(f"/proc/{pid}/comm").read_text().startswith("ray::ServeRepl")]
    assert len(replicas) == 1, replicas
    return replicas[0]


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def server(vit_tiny_dynamic_artifact: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vitdeploy.cli", "serve", str(vit_tiny_dynamic_artifact), "--max-batch", "3",
         "--backend", BACKEND, "--threads", "1", "--port", str(port), "--body-timeout-s", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "VITDEPLOY_TOKEN": TOKEN})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + 240  # Ray starts in about 20 s; far longer on a loaded machine
    while not any(line.startswith("serving ") for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"vitdeploy serve did not start: {process.stderr.read()[-3000:]}")
        time.sleep(0.2)
    yield {"port": port, "pid": process.pid}
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def wire_message(header: bytes, data: bytes = b"") -> bytes:
    return wire.MAGIC + struct.pack("<I", len(header)) + header + data


def array_header(**entry) -> bytes:
    return json.dumps({"arrays": [{"name": "image", "dtype": "uint8", "offset": 0} | entry]}).encode()


def png(width: int, height: int, idat: bytes = b"") -> bytes:
    """A greyscale PNG with this header and these (deflated) rows: tiny, whatever size it declares."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def hostile_cases() -> list[tuple[str, bytes, str, int, str]]:
    """(what, body, content type, status, the reason's start): the issue's examples and their kin."""
    wide = io_png(Image.new("L", (1_000_000, 1)))
    large = png(6000, 6000, zlib.compress(bytes(6001 * 6000), 9))  # 36 megapixels under the 40 limit, 35 KB
    return [
        ("4000 one-pixel images in a 12 KB message", wire.encode({"image": np.zeros((4000, 1, 1, 3), np.uint8)}),
         wire.MEDIA_TYPE, 422, "request holds 4000 images: this server runs at most 3 per call"),
        ("a 1,000,000 x 1 PNG of 3 KB", wide, "image/png", 200, ""),
        ("a uint8 array [1, 10000000, 3] (30 MB)", wire.encode({"image": np.zeros((1, 10_000_000, 3), np.uint8)}),
         wire.MEDIA_TYPE, 200, ""),
        ("a 6000 x 6000 PNG of 35 KB", large, "image/png", 200, ""),
        ("a PNG declaring 100000 x 100000 pixels", png(100_000, 100_000), "image/png", 413,
         "image is a decompression bomb"),
        ("a PNG declaring 10000 x 8000 pixels", png(10_000, 8_000), "image/png", 413,
         "image is 10000x8000 (80000000 pixels): this server decodes at most 40000000 pixels per image"),
        ("an array of 8000 x 8000 pixels declared", wire_message(array_header(shape=[8000, 8000, 3],
                                                                              nbytes=192_000_000)),
         wire.MEDIA_TYPE, 400, "malformed application/x-vitdeploy-arrays message: array 'image' ends at byte"),
        ("a zero-size float32 batch", wire.encode({"image": np.zeros((0, 3, 64, 64), np.float32)}), wire.MEDIA_TYPE,
         422, "array has shape [0, 3, 64, 64]: expected no zero-size dimension"),
        ("a zero-width uint8 image", wire.encode({"image": np.zeros((64, 0, 3), np.uint8)}), wire.MEDIA_TYPE, 422,
         "array has shape [64, 0, 3]: expected no zero-size dimension"),
        ("a dimension of 2**70", wire_message(array_header(shape=[2**70, 0], nbytes=0)), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: array 'image' has shape [1180591620717411303424, 0]"),
        ("a 5000-digit integer in the header", wire_message(array_header(shape=[1], nbytes=1)[:-3] + b"9" * 5000
                                                            + b"}]}"), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: its header is not JSON (ValueError: Exceeds the limit"),
        ("offset true", wire_message(array_header(shape=[1], nbytes=1, offset=True), b"\0"), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: array 'image' has offset True"),
        ("offset 1", wire_message(array_header(shape=[1], nbytes=1, offset=1), b"\0\0"), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: array 'image' has offset 1"),
        ("a header nested 100000 deep", wire_message(b"[" * 100_000), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: its header is not JSON (RecursionError"),
        ("a header that is not UTF-8", wire_message(b'{"arrays": "\xff"}'), wire.MEDIA_TYPE, 400,
         "malformed application/x-vitdeploy-arrays message: its header is not JSON (UnicodeDecodeError"),
    ]


def io_png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_hostile_requests_are_cheap_and_bounded(server):
    """Every case answers within HOSTILE_ANSWER_S with its status and one line, and the replica's peak memory
    grows by less than the server's stated per-request bound over its peak after honest requests of every kind."""
    port = server["port"]
    client = Client(f"http://127.0.0.1:{port}", token=TOKEN)
    bound = client.metadata()["request_memory_bound_bytes"]
    for honest in (np.zeros((3, 3, 128, 96), np.float32), np.zeros((3, 128, 96, 3), np.uint8),
                   np.zeros((64, 64, 3), np.uint8)):
        client.send(honest)
    pid = replica_pid(server["pid"])
    before = peak_rss(pid)
    report = []
    for what, body, media, status, reason in hostile_cases():
        got, answer, seconds = request(port, body, media)
        error = json.loads(answer)["error"] if got != 200 else ""
        grown = (peak_rss(pid) - before) / 2**20
        report.append(f"{what}: {got} {error[:110]} ({seconds:.2f} s, peak +{grown:.0f} MiB)")
        assert got == status and error.startswith(reason) and "\n" not in error, report[-1]
        assert seconds < HOSTILE_ANSWER_S, report[-1]
    grown = peak_rss(pid) - before
    print("\n".join(["", *report, f"replica peak memory: {before / 2**20:.0f} MiB after honest requests, "
                     f"+{grown / 2**20:.0f} MiB under the hostile ones (bound {bound / 2**20:.0f} MiB)"]))
    assert grown <= bound
    assert client.health()["status"] == "ok"  # still serving


def test_bearer_token(server):
    port = server["port"]
    for token in (None, "wrong"):
        status, answer, _ = request(port, None, None, "/v1/health", token=token)
        assert status == 401 and json.loads(answer)["error"] == (
            "missing or wrong bearer token: expected the header 'Authorization: Bearer TOKEN' with the server's token "
            "(vitdeploy serve --token or VITDEPLOY_TOKEN)")
    assert request(port, None, None, "/v1/health")[0] == 200
    assert Client(f"http://127.0.0.1:{port}", token=TOKEN).metadata()["token"] is True


def test_stalled_uploads_do_not_stop_honest_clients(server):
    """16 connections declare a 1 MB body, send 1 KB and stall: honest requests from another address are
    answered meanwhile; each stalled one gets 408 after the 1 s body timeout or 429 at once (a client address
    may be sending --max-batch bodies, 3, at a time)."""
    port = server["port"]
    stalled = []
    for _ in range(STALLED):
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nAuthorization: Bearer "
                           + TOKEN.encode() + b"\r\nContent-Length: 1000000\r\n\r\n" + b"\0" * 1024)
        stalled.append(connection)
    time.sleep(0.3)
    image = wire.encode({"image": np.full((64, 64, 3), 9, np.uint8)})
    for _ in range(3):
        status, _, seconds = request(port, image, wire.MEDIA_TYPE, connection=FromAddress)
        assert status == 200 and seconds < HOSTILE_ANSWER_S
    assert request(port, None, None, "/v1/health")[0] == 200
    answers = []
    for connection in stalled:
        connection.settimeout(30)
        answers.append(connection.recv(64).split(b"\r\n")[0].decode())
        connection.close()
    assert set(answers) <= {"HTTP/1.1 408 Request Timeout", "HTTP/1.1 429 Too Many Requests"}, answers
    assert answers.count("HTTP/1.1 408 Request Timeout") >= 3


def listening(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of the TCP sockets these processes listen on (from /proc)."""
    owners = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    owners[int(link[8:-1])] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:  # a process that ended meanwhile
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in owners:  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                found.append((owners[int(fields[9])], socket.inet_ntop(family, raw), int(port, 16)))
    return found


def _loopback(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    return parsed.is_loopback or bool(mapped and mapped.is_loopback)


def test_what_listens_where(server):
    """docs/security.md's table: the HTTP API on 127.0.0.1:--port, every other Ray port on loopback but each
    replica's inter-deployment gRPC server, which Ray Serve binds on all interfaces."""
    sockets = listening([server["pid"], *descendants(server["pid"])])
    assert ("ray::ProxyActor", "127.0.0.1", server["port"]) in sockets
    exposed = {(name, address) for name, address, _ in sockets if not _loopback(address)}
    assert exposed == {("ray::ServeRepli", "::")}, sockets


def test_non_loopback_host_warns_before_anything_starts(tmp_path: Path):
    """Nothing is served here: the empty folder fails right after the warning."""
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--host", "0.0.0.0"], env={"VITDEPLOY_TOKEN": None})
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        "Warning: --host 0.0.0.0 exposes the HTTP API beyond this machine without authentication: anyone who reaches "
        "port 8000 can use it; set --token or VITDEPLOY_TOKEN to require a bearer token (docs/security.md)")
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--host", "0.0.0.0", "--token", "s3cret"])
    assert "Warning" not in result.output
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--token", " "])
    assert result.output == "Error: --token is empty: expected a secret of one character or more (or unset " \
                            "VITDEPLOY_TOKEN)\n"
