"""A client of `vitdeploy serve`: `Client(url).infer(images)` is the `Pyramid` that `Model.infer` gives.

It takes what `Model.infer` takes: an image path (sent as the file), a uint8 HxWx3 image or NHWC batch,
a float32 NCHW batch (sent in the wire format; a batch larger than the server's `max_batch` in several
requests), or a list of those, sent as concurrent requests (the server batches them) and joined. Needs
only the standard library and numpy: no Ray.

Retries: inference is idempotent, so a request that fails with a connection error, a time-out, a 5xx
status (a replica that died, one being replaced) or 429 (too many bodies sent to one replica at once) is
sent again up to `retries` times, waiting `backoff_s`, then twice as long each time (0.25 + 0.5 + 1 + 2 s
by default). Another 4xx is the request's fault and raises at once with the server's one-line reason.

A server started with a token (`vitdeploy serve --token`) needs it in every request: `token`, by default
the environment variable VITDEPLOY_TOKEN, is sent as `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vitdeploy import description_rules
from vitdeploy.api import Images, Pyramid
from vitdeploy.description import Description
from vitdeploy.errors import VitdeployError
from vitdeploy.serve import wire

_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
_RETRIED = (OSError, http.client.HTTPException)  # refused, reset, timed out, cut short
MAX_CONCURRENT = 16  # requests in flight for one `infer` of a list
TOKEN_ENV = "VITDEPLOY_TOKEN"  # the bearer token, where `vitdeploy serve --token` and this client find it


class Client:
    """A served artifact at `url` (e.g. http://127.0.0.1:8000). Thread-safe: one connection per thread."""

    def __init__(self, url: str = "http://127.0.0.1:8000", retries: int = 4, backoff_s: float = 0.25,
                 timeout_s: float = 60.0, token: str | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VitdeployError(f"server URL {url!r}: expected http://HOST:PORT")
        self.url, self.retries, self.backoff_s, self.timeout_s = url.rstrip("/"), retries, backoff_s, timeout_s
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._metadata: dict[str, Any] | None = None
        self._description: Description | None = None
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._authorization = {"Authorization": f"Bearer {token}"} if token else {}
        self.retried = 0  # requests sent again so far (after a connection error, time-out or 5xx)
        self._count = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        """`GET /v1/metadata`: the artifact description (`description`) and how it is served."""
        if self._metadata is None:
            answer = self._request("GET", "/v1/metadata")
            self._metadata = description_rules.decode(answer, f"{self.url}/v1/metadata")
        return self._metadata

    @property
    def description(self) -> Description:
        if self._description is None:
            self._description = Description.from_dict(self.metadata()["description"], f"{self.url}/v1/metadata")
        return self._description

    def health(self) -> dict[str, Any]:
        return description_rules.decode(self._request("GET", "/v1/health"), f"{self.url}/v1/health")

    def infer(self, images: Images) -> Pyramid:
        """The pyramid of `images` (see the module docstring), as `vitdeploy.load(...).infer(images)` returns it."""
        levels, step = self.description.outputs, self.metadata()["max_batch"]
        if isinstance(images, np.ndarray) and images.ndim == 4 and len(images) > step:  # a request holds max_batch at most
            images = [images[start:start + step] for start in range(0, len(images), step)]
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            return Pyramid(levels, self.send(images)[0])
        items = list(images)
        if not items:
            raise VitdeployError("no images given: expected an image, a list of images or a float32 NCHW batch")
        with ThreadPoolExecutor(min(len(items), MAX_CONCURRENT)) as pool:
            answers = list(pool.map(self.send, items))
        sizes = sorted({self.description.input.hw(meta["input"]) for _, meta in answers})
        if len(sizes) > 1:
            raise VitdeployError(f"images preprocess to different sizes {[f'{h}x{w}' for h, w in sizes]}: "
                                 "expected images of one size per call (infer them one at a time)")
        return Pyramid(levels, {level.name: np.concatenate([arrays[level.name] for arrays, _ in answers])
                                for level in levels})

    def send(self, item: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One request for one path or array: (name -> array, the server's meta: `replica`, `input` (the
        preprocessed batch's shape), `batch` and `requests` (the runtime call it ran in))."""
        body, media = _encode(item)
        return wire.decode(bytearray(self._request("POST", "/v1/infer", body, media)))

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        if fresh or getattr(self._local, "connection", None) is None:
            if getattr(self._local, "connection", None) is not None:
                self._local.connection.close()
            self._local.connection = self._connection_class(*self._address, timeout=self.timeout_s)
        return self._local.connection

    def _request(self, method: str, path: str, body: bytes | None = None, media: str | None = None) -> bytes:
        headers = {"Content-Type": media, **self._authorization} if media else dict(self._authorization)
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._count:
                    self.retried += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                connection = self._connection(fresh=attempt > 0)
                connection.request(method, self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except _RETRIED as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            if response.status < 400:
                return data
            reason = _reason(data) or response.reason
            if response.status < 500 and response.status != 429:
                raise VitdeployError(f"{self.url}{path} refused the request (HTTP {response.status}): {reason}")
            failure = f"HTTP {response.status}: {reason}"
        raise VitdeployError(f"{self.url}{path} failed {self.retries + 1} times (last: {failure}): is the server "
                             "running? (vitdeploy serve)")


def _reason(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return " ".join(data[:200].decode(errors="replace").split())


def _encode(item: Any) -> tuple[bytes, str]:
    """A request body and its content type: an image file as it is, an array in the wire format."""
    if isinstance(item, np.ndarray):
        return wire.encode({"image": item}), wire.MEDIA_TYPE
    if not isinstance(item, (str, os.PathLike)):
        raise VitdeployError(f"image is a {type(item).__name__}: expected a file path or a uint8 HxWx3 RGB array")
    try:
        data = Path(item).read_bytes()
    except FileNotFoundError:
        raise VitdeployError(f"image {item} does not exist: expected a PNG or JPEG file") from None
    except OSError as exc:
        raise VitdeployError(f"cannot read image {item}: {exc.strerror}") from None
    media = next((media for magic, media in _IMAGE_MAGIC.items() if data.startswith(magic)), None)
    if media is None:
        raise VitdeployError(f"{item} is not a readable image: expected a PNG or JPEG file")
    return data, media

