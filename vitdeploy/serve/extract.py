"""`vitdeploy extract`: pyramid features of many images on Ray Data actors, written as shards plus an index.

The output directory (docs/serving.md, "Feature extraction"):
- `extract.json`: the job (artifact, input size, levels and their per-image shapes, pooling, shard size,
  a fingerprint of the image list). A rerun with other settings or images is refused.
- `shard-00000.npz`, ...: numpy `.npz` (no pickles), one per slice of `shard_size` images of the input
  list: per chosen level a float32 array `[n, ...]` of the shard's readable images in order, `path` their
  paths, `error_path` and `error` the unreadable ones and why.
- `index.jsonl`: one line per image of the finished shards, in input order:
  `{"path", "shard", "row"}`, or `{"path", "shard", "error"}` for an image that could not be read.

Actors (Ray Data's actor pool) each load the model once and turn a shard's paths into its .npz bytes;
the driver writes every shard atomically (vitdeploy.atomic) as it arrives, so an interrupt leaves only
whole shards, and a rerun into the same directory skips the shards already there. Every image is
resized to one input size (a dynamic artifact's export size unless `size` says otherwise) so that a
level stacks into one array.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vitdeploy.api import load
from vitdeploy.artifact import Artifact, load_artifact_directory
from vitdeploy.atomic import write_bytes_atomic, write_json_atomic
from vitdeploy.description import InputSpec
from vitdeploy.errors import VitdeployError
from vitdeploy.optional import ensure_installed, require
from vitdeploy.preprocess import preprocess
from vitdeploy.runners import select
from vitdeploy.serve.batching import serving_batch
from vitdeploy.serve.cluster import local_cpus, ray_cluster

FORMAT, FORMAT_VERSION = "vitdeploy.features", 1
JOB_FILE, INDEX_FILE = "extract.json", "index.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ExtractOptions:
    levels: tuple[str, ...] = ()  # () : every output of the artifact
    pool: bool = False  # average feature maps over height and width: [n, channels]
    size: tuple[int, int] | None = None  # a dynamic artifact's input size [default: its export size]
    shard_size: int = 256
    actors: int = 1
    batch: int | None = None  # images per runtime call [default: serving_batch's]
    backend: str = "auto"
    precision: str | None = None
    threads: int | None = None  # runtime threads per actor [default: the CPUs / actors]
    address: str | None = None  # a Ray cluster to join [default: start a local one]
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Summary:
    out: Path
    images: int
    shards: int
    written: int  # shards written by this run
    skipped: int  # shards found complete
    extracted: int  # images with features, in every finished shard
    unreadable: int
    levels: dict[str, list[int]]  # name -> per-image shape


def collect_images(sources: Sequence[Path], lists: Sequence[Path] = ()) -> list[str]:
    """Image paths in order, each once: a folder's entries named as PNG and JPEG files (recursively, sorted), a
    file as given, and the lines of each list file. A listed path that is missing, and an entry that is not a
    regular file (a FIFO, socket, device or broken link), becomes an error in the index: it is never opened."""
    paths: list[str] = []
    for source in sources:
        if source.is_dir():
            paths += sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        elif source.exists():
            paths.append(str(source))
        else:
            raise VitdeployError(f"{source} does not exist: expected image files or folders of them")
    for listing in lists:
        try:
            paths += [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise VitdeployError(f"cannot read the image list {listing}: {exc.strerror}") from None
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise VitdeployError(f"no images in {', '.join(map(str, [*sources, *lists]))}: expected PNG or JPEG files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
    return unique


def shard_path(out: Path, shard: int) -> Path:
    return out / f"shard-{shard:05d}.npz"


def _input_spec(artifact: Artifact, size: tuple[int, int] | None) -> InputSpec:
    """The artifact's input with one size: what every image is resized to."""
    spec = artifact.input
    hw = size or spec.opt_hw
    problem = spec.size_error(*hw)
    if problem:
        raise VitdeployError(f"--size {hw[0]}x{hw[1]}: {problem}")
    return replace(spec, mode="fixed", min_hw=hw, opt_hw=hw, max_hw=hw)


def _level_shapes(artifact: Artifact, options: ExtractOptions, hw: tuple[int, int]) -> dict[str, list[int]]:
    names = options.levels or tuple(artifact.output_names)
    unknown = [name for name in names if name not in artifact.output_names]
    if unknown:
        raise VitdeployError(f"unknown level {unknown[0]!r}: {artifact.name} has {', '.join(artifact.output_names)}")
    shapes = {}
    for level in artifact.outputs:
        if level.name in names:
            shape = level.shape(1, *hw)[1:]
            shapes[level.name] = shape[:1] if options.pool else shape
    return shapes


def job_record(artifact: Artifact, images: list[str], options: ExtractOptions, spec: InputSpec,
               levels: dict[str, list[int]]) -> dict[str, Any]:
    """What `extract.json` holds: everything that decides the shards' contents."""
    description = artifact.description
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "artifact": artifact.name,
            "model": {"recipe": description.recipe, "timm_name": description.timm_name,
                      "weights_sha256": description.weights.sha256,
                      "onnx_sha256": {name: f.sha256 for name, f in description.export.files.items()}
                      if description.export else None},
            "input_hw": list(spec.opt_hw), "pool": options.pool,
            "levels": [{"name": name, "shape": shape, "dtype": "float32"} for name, shape in levels.items()],
            "shard_size": options.shard_size, "images": len(images), "shards": -(-len(images) // options.shard_size),
            "inputs_sha256": hashlib.sha256("\n".join(images).encode()).hexdigest()}


def _prepare_output(out: Path, record: dict[str, Any], force: bool) -> None:
    """`out` ready for this job: new, the same job to resume, or (force) cleared of an earlier one."""
    job = out / JOB_FILE
    if force:
        for path in [job, out / INDEX_FILE, *out.glob("shard-*.npz")] if out.is_dir() else []:
            path.unlink(missing_ok=True)
    elif job.is_file():
        try:
            existing = json.loads(job.read_text())
        except (OSError, ValueError):
            existing = {}
        differ = [key for key in record if existing.get(key) != record[key]]
        if differ:
            raise VitdeployError(f"{out} holds another extraction ({', '.join(differ)} differ): use another -o, or "
                                 "--force to replace it")
    elif out.is_dir() and any(out.iterdir()):
        raise VitdeployError(f"{out} is not empty and holds no {JOB_FILE}: use another -o, or --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job, record)


class ShardExtractor:
    """A Ray Data actor: the model loaded once; each call turns shards of image paths into their .npz bytes."""

    def __init__(self, artifact: str, options: ExtractOptions, spec: InputSpec, levels: dict[str, list[int]],
                 batch: int):
        self.model = load(artifact, options.backend, options.precision, options.threads)
        self.spec, self.levels, self.pool = spec, levels, options.pool
        self.batch = batch  # images per runtime call, resolved by `extract`

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"shard": batch["shard"], "npz": np.array([self.shard(list(paths)) for paths in batch["paths"]],
                                                         dtype=object)}

    def shard(self, paths: list[str]) -> bytes:
        rows, tensors, errors = [], [], []
        for path in paths:
            try:
                tensors.append(preprocess(path, self.spec)[0])
                rows.append(path)
            except Exception as exc:  # an unreadable image is listed, never fatal
                reason = str(exc) if isinstance(exc, VitdeployError) else f"{type(exc).__name__}: {exc}"
                errors.append((path, " ".join(reason.split())))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.levels}
        for start in range(0, len(tensors), self.batch):
            pyramid = self.model.run(np.concatenate(tensors[start:start + self.batch]))
            for name in self.levels:
                array = pyramid[name]
                parts[name].append(array.mean(axis=(2, 3)) if self.pool and array.ndim == 4 else array)
        arrays: dict[str, Any] = {
            name: np.concatenate(chunks) if chunks else np.zeros((0, *self.levels[name]), np.float32)
            for name, chunks in parts.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, path=np.array(rows, dtype=str), error_path=np.array([p for p, _ in errors], dtype=str),
                 error=np.array([e for _, e in errors], dtype=str))
        return buffer.getvalue()


def write_index(out: Path, images: list[str], shard_size: int) -> tuple[int, int]:
    """`index.jsonl` from the finished shards (input order); returns (extracted, unreadable) images."""
    lines, extracted, unreadable = [], 0, 0
    for shard in range(-(-len(images) // shard_size)):
        path = shard_path(out, shard)
        if not path.is_file():
            continue
        with np.load(path) as data:
            rows = {p: row for row, p in enumerate(data["path"].tolist())}
            failed = dict(zip(data["error_path"].tolist(), data["error"].tolist()))
        for image in images[shard * shard_size:(shard + 1) * shard_size]:
            entry = {"path": image, "shard": shard, "row": rows[image]} if image in rows else \
                {"path": image, "shard": shard, "error": failed.get(image, "missing from its shard")}
            lines.append(json.dumps(entry))
        extracted, unreadable = extracted + len(rows), unreadable + len(failed)
    write_bytes_atomic(out / INDEX_FILE, "".join(line + "\n" for line in lines).encode())
    return extracted, unreadable


# Ray Data threads that call into Ray per block until their iteration ends (its prefetcher parks idle instead).
_ITERATION_THREADS = ("StreamingExecutor-", "iter_threaded")


def _close_iteration(rows: Any, earlier: set[threading.Thread], timeout: float = 30.0) -> None:
    """End a Ray Data iteration before Ray shuts down. Left to the garbage collector (an interrupt between rows),
    its executor and reader threads outlived ray.shutdown(), and the next call one made into Ray's core worker
    ended the process with status 1 instead of the interrupt's. Closing stops them; they are then waited for
    (Ray Data's own shutdown waits 2 s, which a loaded machine can exceed)."""
    rows.close()
    deadline = time.monotonic() + timeout
    for thread in set(threading.enumerate()) - earlier:
        if thread.name.startswith(_ITERATION_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))


def _run(ray: Any, artifact: Artifact, work: list[dict[str, Any]], out: Path, options: ExtractOptions,
         spec: InputSpec, levels: dict[str, list[int]], batch: int, bar: Any) -> int:
    """Extract the `work` shards on Ray Data's actor pool; each is written as it arrives. Returns how many."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's bar counts images instead
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.actors)
    constructor = {"artifact": str(artifact.directory), "options": replace(options, threads=threads), "spec": spec,
                   "levels": levels, "batch": batch}
    dataset = ray.data.from_items(work).map_batches(
        ShardExtractor, fn_constructor_kwargs=constructor, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.actors), num_cpus=1)
    sizes = {item["shard"]: len(item["paths"]) for item in work}
    written = 0
    earlier = set(threading.enumerate())
    rows = iter(dataset.iter_rows())
    try:
        for row in rows:
            write_bytes_atomic(shard_path(out, int(row["shard"])), row["npz"])
            written += 1
            bar.update(sizes[int(row["shard"])])
    finally:
        _close_iteration(rows, earlier)
    return written


def extract(artifact_dir: Path, images: list[str], out: Path, options: ExtractOptions = ExtractOptions()) -> Summary:
    """Features of `images` into `out` (see the module docstring); resumes a run interrupted there."""
    ensure_installed("ray")  # before OUT is touched; Ray itself is imported later (vitdeploy.serve.cluster)
    artifact = load_artifact_directory(artifact_dir)
    select(artifact, options.backend, options.precision)  # an unavailable backend fails here, not in every actor
    spec = _input_spec(artifact, options.size)
    batch = serving_batch(spec.batch, options.batch, "--batch")
    if options.shard_size < 1 or options.actors < 1:
        raise VitdeployError("--shard-size and --actors: expected positive numbers")
    levels = _level_shapes(artifact, options, spec.opt_hw)
    record = job_record(artifact, images, options, spec, levels)
    _prepare_output(out, record, options.force)
    shards = [images[start:start + options.shard_size] for start in range(0, len(images), options.shard_size)]
    work: list[dict[str, Any]] = [{"shard": i, "paths": paths} for i, paths in enumerate(shards)
                                  if not shard_path(out, i).is_file()]
    done_images = len(images) - sum(len(item["paths"]) for item in work)
    written = 0
    bar = require("tqdm").tqdm(total=len(images), initial=done_images, unit="img", file=sys.stderr,
                               desc=f"extracting {artifact.name}", disable=not options.progress or not work)
    try:
        if work:
            with ray_cluster(options.address, local_cpus(options.actors)) as ray:
                written = _run(ray, artifact, work, out, options, spec, levels, batch, bar)
    finally:
        bar.close()
        extracted, unreadable = write_index(out, images, options.shard_size)
    return Summary(out=out, images=len(images), shards=len(shards), written=written,
                   skipped=len(shards) - len(work), extracted=extracted, unreadable=unreadable, levels=levels)

