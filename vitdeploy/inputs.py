"""The one check of an input batch, made before any runtime sees it (every runner calls it once), and the
seeded image-like batches that verify, bench and the fp16 range check feed.

The exported graph does not check sizes itself: a ViT given 230 px would silently drop pixels and a
Hiera would fail deep inside a reshape. Engines add their optimisation profile: TensorRT's own answer
to an out-of-profile shape is an error log and garbage or no outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitdeploy.description import InputSpec, Profile
from vitdeploy.errors import VitdeployError

# Normalised pixels of images lie in this band (in units of pixel_scale), wide enough for any image and
# for standard-normal test data, narrow enough to catch raw 0..255 input.
NORMALISED_BAND = (-4.0, 5.0)


def feed_image(spec: InputSpec, feed_dict: dict[str, Any]) -> Any:
    """The image array of a feed, which must hold exactly the artifact's one input."""
    if list(feed_dict) != [spec.name]:
        raise VitdeployError(f"feed has inputs {sorted(feed_dict)}: expected exactly [{spec.name!r}]")
    return feed_dict[spec.name]


def profile_table(profile: dict[str, Profile]) -> str:
    """An engine's optimisation profile as aligned rows: name, min, opt, max."""
    rows = [("", "min", "opt", "max")] + [(name, *(str(list(getattr(p, k))) for k in ("min", "opt", "max")))
                                          for name, p in profile.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _check_profile(spec: InputSpec, shape: list[int], profiles: dict[str, Profile]) -> None:
    bounds = profiles[spec.name]
    if len(shape) != len(bounds.min):
        raise VitdeployError(f"input '{spec.name}' has shape {shape}: expected {len(bounds.min)} dimensions "
                             f"({spec.layout})\n{profile_table(profiles)}")
    for axis, (size, low, high) in enumerate(zip(shape, bounds.min, bounds.max)):
        if not low <= size <= high:
            raise VitdeployError(f"input '{spec.name}' has shape {shape}, outside the engine profile "
                                 f"({spec.axis_names()[axis]} {size} is not in {low}..{high}):\n"
                                 f"{profile_table(profiles)}")


def check_feed(spec: InputSpec, feed_dict: dict[str, Any], profile: dict[str, Profile] | None = None,
               torch_tensors: bool = False) -> Any:
    """Raise a VitdeployError saying what was expected unless the feed fits the artifact (dtype, layout,
    channels, batch range, size rule and range) and, for an engine, its profile; returns the array.
    `torch_tensors`: torch tensors are accepted too (TensorRT reads CUDA tensors without copies)."""
    array = feed_image(spec, feed_dict)
    kinds = ("numpy", "torch") if torch_tensors else ("numpy",)
    if type(array).__module__.split(".")[0] not in kinds or not hasattr(array, "shape"):
        expected = "a numpy.ndarray or torch.Tensor" if torch_tensors else "a numpy.ndarray"
        raise VitdeployError(f"input '{spec.name}' is a {type(array).__name__}: expected {expected}")
    if str(array.dtype).removeprefix("torch.") != spec.dtype:
        raise VitdeployError(f"input '{spec.name}' has dtype {str(array.dtype).removeprefix('torch.')}: expected "
                             f"{spec.dtype} ({spec.value_hint()})")
    shape = list(array.shape)
    if profile is not None:
        _check_profile(spec, shape, profile)
    channel_axis = spec.axis_names().index("channels")
    if len(shape) != 4 or shape[channel_axis] != spec.channels:
        other = "NCHW" if spec.layout == "NHWC" else "NHWC"
        looks_other = len(shape) == 4 and shape[4 - channel_axis] == spec.channels
        hint = f" (looks like {other}: transpose to {spec.layout})" if looks_other else ""
        expected = ", ".join(map(str, spec.shape("batch", "height", "width")))
        raise VitdeployError(f"input '{spec.name}' has shape {shape}: expected {spec.layout} [{expected}]{hint}")
    problem = spec.batch.batch_error(shape[0]) or spec.size_error(*spec.hw(shape))
    if problem:
        raise VitdeployError(f"input '{spec.name}': {problem}")
    return array


def check_normalised_values(spec: InputSpec, array: np.ndarray) -> None:
    """A float32 batch given by a user holds finite values within the normalised band of real pixels (raw
    0..255 pixels fail here with a hint); a uint8 batch of an artifact that normalises itself always passes,
    and so does an array of the wrong dtype or shape, which the runner's check_feed reports."""
    if spec.normalised_in_graph or array.dtype != np.float32 or array.ndim != 4 or array.shape[1] != spec.channels:
        return
    if not np.isfinite(array).all():
        raise VitdeployError(f"input '{spec.name}' holds NaN or infinite values: expected finite normalised pixels")
    mean, std = np.asarray(spec.mean, np.float64), np.asarray(spec.std, np.float64)
    low, high = (NORMALISED_BAND[0] - mean) / std, (NORMALISED_BAND[1] - mean) / std
    channel_min, channel_max = array.min(axis=(0, 2, 3)), array.max(axis=(0, 2, 3))
    for channel in range(array.shape[1]):
        if channel_min[channel] < low[channel] or channel_max[channel] > high[channel]:
            raise VitdeployError(
                f"input '{spec.name}' channel {channel} spans {channel_min[channel]:.4g}..{channel_max[channel]:.4g}: "
                f"expected normalised pixels, (pixel / {spec.pixel_scale} - mean) / std, within "
                f"{low[channel]:.3g}..{high[channel]:.3g} (raw 0..255 pixels? use vitdeploy.preprocess)")


def verification_feeds(spec: InputSpec, sizes: list[tuple[int, int]], batch_sizes: list[int],
                       seed: int) -> list[dict[str, np.ndarray]]:
    """Seeded image-like inputs: uniform pixels, normalised with the artifact's own mean and std unless
    the artifact normalises them itself (then uint8 NHWC)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    feeds = []
    for height, width in sizes:
        for batch in batch_sizes:
            if spec.normalised_in_graph:
                image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
            else:
                image = ((rng.random((batch, 3, height, width), dtype=np.float32) - mean) / std).astype(np.float32)
            feeds.append({spec.name: image})
    return feeds
