"""The Ray Serve application behind `vitdeploy serve`: replicas of `vitdeploy.load` that batch requests.

HTTP API (docs/serving.md): `POST /v1/infer` takes an image file (`Content-Type: image/png` or
`image/jpeg`) or one array in the wire format (`application/x-vitdeploy-arrays`: a uint8 HxWx3 image,
a uint8 NHWC batch or a float32 NCHW batch, as `Model.infer` takes them) and answers the pyramid in the
wire format (vitdeploy.serve.wire); `GET /v1/metadata` gives the artifact description and how it is
served; `GET /v1/health` answers 200 while the replica serves. Every refused request is a 4xx with
`{"error": "<one line>"}`, and the replica goes on serving. A SAM2 artifact exported with --decoder also
serves `POST /v1/sam2` (vitdeploy.serve.sam2: an image or a cached image id, and prompts -> masks, scores).

Hostile input (docs/security.md): a request is refused from its cheapest facts first (token, route, content
type, body size and pace, the declared image size or array shape, dtype and batch), before any array is built
or image decoded; a replica decodes and preprocesses one request at a time, so its peak memory per request is
bounded by the limits (`request_memory_bound`).

Batching: a replica preprocesses each request as `Model.infer` does, then hands it to Ray Serve's
`serve.batch`, which gathers requests until `max_batch` images wait or `batch_wait_ms` has passed since
the first. A gathered batch runs as one runtime call per preprocessed input size: requests of another
size wait for no one, they run in their own call in the same turn.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import io
import logging
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vitdeploy.api import load
from vitdeploy.errors import VitdeployError
from vitdeploy.inputs import check_feed
from vitdeploy.optional import require
from vitdeploy.preprocess import load_image
from vitdeploy.sam2.graph import DECODER_DESCRIPTION
from vitdeploy.serve import wire
from vitdeploy.serve.batching import SERVING_BATCH
from vitdeploy.serve.client import TOKEN_ENV
from vitdeploy.serve.sam2 import Sam2Route, parse_prompts

if TYPE_CHECKING:  # starlette comes with ray[serve]
    from starlette.requests import Request
    from starlette.responses import Response

ROUTES = {"/v1/infer": "POST", "/v1/metadata": "GET", "/v1/health": "GET", "/v1/sam2": "POST"}
IMAGE_TYPES = ("image/png", "image/jpeg")
MAX_IMAGE_PIXELS = 40_000_000  # decoding more would take gigabytes (a small PNG can hold a huge image)
DRAIN_TIMEOUT_S = 10  # on shutdown, how long a replica may finish its requests in flight
QUIET = {"log_level": "WARNING", "enable_access_log": False}  # Serve's logs: warnings and errors only
_DRAIN_FACTOR = 8  # an oversized body is read (and dropped) up to this many limits, so the 413 reaches the client
BODY_DEADLINE_S = 60.0  # the whole body of a request must arrive within this
logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ServeOptions:
    """What every replica is started with."""

    artifact: str
    backend: str = "auto"
    precision: str | None = None
    replicas: int = 1
    max_batch: int = SERVING_BATCH  # images per runtime call: serving_batch
    batch_wait_ms: float = 10.0
    threads: int | None = None  # runtime threads per replica
    max_body_bytes: int = 32 * 2**20
    body_timeout_s: float = 10.0  # longest pause while a body is received (a stalled client gets 408)
    token: str | None = None  # requests must carry `Authorization: Bearer <token>`; None: no authentication


class RequestError(Exception):
    """A refused request: its HTTP status and the one line sent back."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())


def _path(request: Request) -> str:
    """The path below the application's route prefix."""
    path, root = request.url.path, request.scope.get("root_path", "")
    return (path[len(root):] if root and path.startswith(root) else path) or "/"


async def _read_body(request: Request, limit: int, pause_s: float) -> bytes:
    """The body, refused as soon as its declared or received size is over `limit` (413) or it pauses longer than
    `pause_s` or takes longer than BODY_DEADLINE_S (408: a stalled client frees its place)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and len(declared) < 20 and int(declared) > _DRAIN_FACTOR * limit:
        raise RequestError(413, f"request body is declared as {int(declared)} bytes: this server takes at most "
                                f"{limit} bytes (vitdeploy serve --max-body-mb)")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BODY_DEADLINE_S
    size, chunks, cut = 0, [], False
    stream = request.stream().__aiter__()
    while True:
        wait = min(pause_s, deadline - loop.time())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestError(408, f"request body stalled after {size} bytes: this server waits at most "
                                    f"{pause_s:g} s for more and {BODY_DEADLINE_S:g} s in all") from None
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > _DRAIN_FACTOR * limit:
            cut = True
            break
    if size > limit:
        raise RequestError(413, f"request body is {'over ' * cut}{size} bytes: this server takes at most {limit} "
                                "bytes (vitdeploy serve --max-body-mb)")
    if size == 0:
        raise RequestError(400, "request body is empty: expected a PNG or JPEG file or a "
                                f"{wire.MEDIA_TYPE} message")
    return b"".join(chunks)


def _check_pixels(height: int, width: int, what: str) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise RequestError(413, f"{what} is {width}x{height} ({height * width} pixels): this server decodes at most "
                                f"{MAX_IMAGE_PIXELS} pixels per image; resize it first")


def _decode_image(body: bytes) -> np.ndarray:
    """A PNG or JPEG body as uint8 HxWx3, its size checked from its header before a pixel is decoded."""
    try:
        with Image.open(io.BytesIO(body)) as probe:  # reads the header only
            width, height = probe.size
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise RequestError(413, f"image is a decompression bomb ({exc}): this server decodes at most "
                                f"{MAX_IMAGE_PIXELS} pixels per image") from None
    except Exception:  # not an image at all: load_image below says what it is
        width = height = 0
    _check_pixels(height, width, "image")
    try:
        return load_image(io.BytesIO(body), name="request body")
    except VitdeployError as exc:
        raise RequestError(400, str(exc)) from None


def _check_array(array: np.ndarray, max_batch: int) -> None:
    """An array request's declared shape against the server's limits, before it is touched (dtype, layout and
    the size rule are the artifact's, which `Model.batch` and `check_feed` report as cheaply)."""
    shape = list(array.shape)
    if 0 in shape:
        raise RequestError(422, f"array has shape {shape}: expected no zero-size dimension")
    count = shape[0] if array.ndim == 4 else 1
    if count > max_batch:
        raise RequestError(422, f"request holds {count} images: this server runs at most {max_batch} per call "
                                "(vitdeploy serve --max-batch); send fewer")
    if array.dtype == np.uint8 and array.ndim in (3, 4):
        _check_pixels(shape[-3], shape[-2], "image array")


def request_memory_bound(max_body_bytes: int, max_batch: int, input_hw: tuple[int, int]) -> int:
    """Bytes one request may make a replica hold beyond its steady state (the model and the runtime's working
    memory for a full batch), by docs/security.md's formula: the body 4 times (Serve's message and its copy,
    the chunks, joined); a decoded image of MAX_IMAGE_PIXELS 7 times (Pillow's, up to 4 bytes a pixel, and the
    RGB array); 4 float32 RGB copies of the resize's intermediate, at most sqrt(image pixels x input pixels)
    (the axis kept first leaves the smaller); and 4 float32 copies of a full batch at the largest input."""
    out = input_hw[0] * input_hw[1]
    return (4 * max_body_bytes + 7 * MAX_IMAGE_PIXELS + 4 * 12 * math.isqrt(MAX_IMAGE_PIXELS * out)
            + 4 * 12 * max_batch * out)


class Replica:
    """One replica: the model, the batching queue, and the HTTP routes."""

    def __init__(self, options: ServeOptions):
        serve = require("ray.serve")
        self._http = require("starlette.responses")
        self.options = options
        self.sam2: Sam2Route | None = None
        if (Path(options.artifact) / DECODER_DESCRIPTION).is_file():  # SAM2 with its decoder: /v1/sam2 too
            from vitdeploy.sam2.predictor import Predictor

            predictor = Predictor(options.artifact, options.backend, options.precision, options.threads)
            self.sam2, self.model = Sam2Route(predictor), predictor.encoder
        else:
            self.model = load(options.artifact, options.backend, options.precision, options.threads)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._preparing = asyncio.Semaphore(1)  # one request decoded and preprocessed at a time: memory bound
        self._reading: dict[str, int] = {}  # client address -> bodies being received from it
        self._batched = serve.batch(max_batch_size=options.max_batch, batch_wait_timeout_s=options.batch_wait_ms / 1e3,
                                    batch_size_fn=lambda batches: sum(batch.shape[0] for batch in batches))(self._run)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except RequestError as exc:
            return self._http.JSONResponse({"error": exc.message}, status_code=exc.status)
        except Exception as exc:  # a bug or a runtime failure: the client may retry
            logger.exception("vitdeploy: request failed")
            message = " ".join(f"internal error: {type(exc).__name__}: {exc}".split())
            return self._http.JSONResponse({"error": message}, status_code=500)

    async def _route(self, request: Request) -> Response:
        self._authorise(request)
        path = _path(request)
        if path not in ROUTES:
            raise RequestError(404, f"no route {path}: expected POST /v1/infer, GET /v1/metadata, GET /v1/health or "
                                    "POST /v1/sam2")
        if request.method != ROUTES[path]:
            raise RequestError(405, f"{request.method} {path}: expected {ROUTES[path]} {path}")
        if path == "/v1/health":
            return self._http.JSONResponse({"status": "ok", "replica": self.replica, "backend": self.model.backend})
        if path == "/v1/metadata":
            return self._http.JSONResponse(self.metadata())
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if path == "/v1/sam2":
            return await self._sam2(request, media)
        if media not in (*IMAGE_TYPES, wire.MEDIA_TYPE):
            raise RequestError(415, f"content type {media or 'none'!r}: expected image/png, image/jpeg or "
                                    f"{wire.MEDIA_TYPE}")
        body = await self._receive(request)
        async with self._preparing:
            batch = await asyncio.to_thread(self._prepare, media, body)
        del body
        outputs, info = await self._batched(batch)
        return self._http.Response(wire.encode(outputs, {**info, "replica": self.replica}), media_type=wire.MEDIA_TYPE)

    def _authorise(self, request: Request) -> None:
        token = self.options.token
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RequestError(401, "missing or wrong bearer token: expected the header 'Authorization: Bearer "
                                    f"TOKEN' with the server's token (vitdeploy serve --token or {TOKEN_ENV})")

    async def _receive(self, request: Request) -> bytes:
        """The body, with at most `max_batch` bodies received from one client address at a time (half the
        requests Serve gives a replica): a client that stalls many uploads holds half the places at most, each
        for `body_timeout_s` at most; 429 tells it to retry later (the Client does)."""
        client, limit = (request.client.host if request.client else "unknown"), self.options.max_batch
        if self._reading.get(client, 0) >= limit:
            raise RequestError(429, f"{client} is already sending {limit} request bodies to this replica: send the "
                                    "next when one has been received")
        self._reading[client] = self._reading.get(client, 0) + 1
        try:
            return await _read_body(request, self.options.max_body_bytes, self.options.body_timeout_s)
        finally:
            self._reading[client] -= 1
            if not self._reading[client]:
                del self._reading[client]

    async def _sam2(self, request: Request, media: str) -> Response:
        if self.sam2 is None:
            raise RequestError(404, f"no route /v1/sam2: {self.model.artifact.name} has no SAM2 decoder (a SAM2 "
                                    "artifact exported with --decoder serves it)")
        query = request.query_params
        try:
            prompt = parse_prompts(query.getlist("point"), query.getlist("box"), query.get("multimask"))
        except VitdeployError as exc:
            raise RequestError(400, str(exc)) from None
        cached = query.get("image_id")
        if cached is not None:
            image_id = cached
            try:
                embedding = self.sam2.cached(image_id)
            except KeyError:
                raise RequestError(404, f"image_id {image_id} is not cached here: send the image (this replica keeps "
                                        "the last images it embedded)") from None
        else:
            if media not in IMAGE_TYPES:
                raise RequestError(415, f"content type {media or 'none'!r}: expected image/png or image/jpeg, or an "
                                        "empty body with ?image_id=")
            body = await self._receive(request)
            async with self._preparing:  # decoded one at a time, as /v1/infer's: the memory bound holds
                image = await asyncio.to_thread(_decode_image, body)
            del body
            image_id, embedding = await asyncio.to_thread(self.sam2.embed, image)
        try:
            arrays, meta = await asyncio.to_thread(self.sam2.predict, image_id, embedding, prompt)
        except VitdeployError as exc:
            raise RequestError(422, str(exc)) from None
        return self._http.Response(wire.encode(arrays, {**meta, "replica": self.replica}), media_type=wire.MEDIA_TYPE)

    def metadata(self) -> dict[str, Any]:
        options = self.options
        return {"artifact": self.model.artifact.name, "backend": self.model.backend,
                "engine": self.model.engine.name if self.model.engine else None, "replica": self.replica,
                "max_batch": options.max_batch, "batch_wait_ms": options.batch_wait_ms,
                "max_body_bytes": options.max_body_bytes, "max_image_pixels": MAX_IMAGE_PIXELS,
                "body_timeout_s": options.body_timeout_s, "token": options.token is not None,
                "request_memory_bound_bytes": request_memory_bound(options.max_body_bytes, options.max_batch,
                                                                   self.model.input.max_hw),
                "wire": wire.MEDIA_TYPE, "description": self.model.artifact.description.to_dict()}

    def _prepare(self, media: str, body: bytes) -> np.ndarray:
        """The request's batch, preprocessed and checked as `Model.infer` would (so no bad request joins a batch)."""
        if media in IMAGE_TYPES:
            images = _decode_image(body)
        else:
            try:
                arrays, _ = wire.decode(body)
            except VitdeployError as exc:
                raise RequestError(400, str(exc)) from None
            if len(arrays) != 1:
                raise RequestError(400, f"request holds {len(arrays)} arrays: expected one (an image or a batch)")
            (images,) = arrays.values()
            _check_array(images, self.options.max_batch)
        try:
            batch = self.model.batch(images)
            check_feed(self.model.input, {self.model.input.name: batch})
        except VitdeployError as exc:
            raise RequestError(422, str(exc)) from None
        return batch

    async def _run(self, batches: list[np.ndarray]) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """The batched call: one runtime call per input size, each request's rows sliced back out."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, batch in enumerate(batches):
            groups.setdefault(batch.shape[1:], []).append(i)
        results: list[Any] = [None] * len(batches)
        for members in groups.values():
            joined = np.concatenate([batches[i] for i in members])
            pyramid = await asyncio.to_thread(self.model.run, joined)
            start = 0
            for i in members:
                stop = start + batches[i].shape[0]
                results[i] = ({name: pyramid[name][start:stop] for name in pyramid},
                              {"input": list(batches[i].shape), "batch": int(joined.shape[0]), "requests": len(members)})
                start = stop
        return results


def application(options: ServeOptions) -> Any:
    """The bound Serve application: `options.replicas` replicas of one CPU each."""
    serve = require("ray.serve")
    deployment = serve.deployment(name="vitdeploy", num_replicas=options.replicas, ray_actor_options={"num_cpus": 1},
                                  max_ongoing_requests=2 * options.max_batch,  # one batch runs, one gathers
                                  graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=DRAIN_TIMEOUT_S,
                                  logging_config=QUIET)(Replica)
    return deployment.bind(options)


def start(host: str, port: int) -> None:
    """Start Ray Serve's HTTP proxy on host:port, quiet but for warnings and errors."""
    serve = require("ray.serve")
    serve.start(http_options={"host": host, "port": port}, logging_config=QUIET)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this driver's, too: the CLI says what it started


def deploy(options: ServeOptions, name: str = "vitdeploy", route_prefix: str = "/") -> None:
    """Deploy (or redeploy) the application and wait until its replicas serve; replicas that cannot start (Serve
    tries a few times) are one line: the last line of their traceback."""
    serve = require("ray.serve")
    try:
        serve.run(application(options), name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError as exc:  # Serve's "Deploying application ... failed"; the replicas' traceback is in the status
        deployments = serve.status().applications[name].deployments.values()
        lines = [line for d in deployments for line in d.message.splitlines() if line.strip()] or [str(exc)]
        reason = lines[-1].removeprefix(f"{VitdeployError.__module__}.{VitdeployError.__name__}: ")
        raise VitdeployError(f"the replicas failed to start: {reason}") from None


def check_port(host: str, port: int) -> None:
    """Fail with one line, before Ray starts, if host:port cannot be listened on (Ray Serve's proxy would only log
    it and retry)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a closing socket is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise VitdeployError(f"port {port} on {host} is in use: stop what listens there or choose another "
                                     "with --port") from None
            raise VitdeployError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def stop(name: str = "vitdeploy") -> None:
    """Delete the application, letting its replicas finish the requests in flight (DRAIN_TIMEOUT_S at most); a
    local cluster is then shut down whole by its owner."""
    require("ray.serve").delete(name)
