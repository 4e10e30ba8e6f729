"""Checks of an input batch against an artifact's input rules, made before any runtime is called.

The exported graph does not check sizes itself: a ViT given 230 px would silently drop pixels and a
Hiera would fail deep inside a reshape, so every vitdeploy runner calls this first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitdeploy.errors import VitdeployError


def size_error(input_spec: dict[str, Any], height: int, width: int) -> str | None:
    """Why (height, width) breaks the artifact's size rule or range; None if it is valid."""
    multiple = input_spec["size_multiple"]
    (min_h, min_w), (max_h, max_w) = input_spec["min_hw"], input_spec["max_hw"]
    if height % multiple or width % multiple:
        return f"size {height}x{width} is not a multiple of {multiple} (the backbone's size rule)"
    if not (min_h <= height <= max_h and min_w <= width <= max_w):
        if input_spec["mode"] == "fixed":
            return f"size {height}x{width} differs from the artifact's fixed size {min_h}x{min_w}"
        return f"size {height}x{width} is outside the artifact's range {min_h}x{min_w} .. {max_h}x{max_w}"
    return None


def feed_image(input_spec: dict[str, Any], feed_dict: dict[str, Any]) -> Any:
    """The image array of a runner's feed, which must hold exactly the artifact's one input."""
    name = input_spec["name"]
    if list(feed_dict) != [name]:
        raise VitdeployError(f"feed has inputs {sorted(feed_dict)}: expected exactly [{name!r}]")
    return feed_dict[name]


def check_image_batch(input_spec: dict[str, Any], array: Any) -> None:
    """Raise a VitdeployError saying what was expected if `array` cannot be fed to the artifact."""
    name = input_spec["name"]
    if not isinstance(array, np.ndarray):
        raise VitdeployError(f"input '{name}' is a {type(array).__name__}: expected a numpy.ndarray")
    if array.dtype != np.dtype(input_spec["dtype"]):
        raise VitdeployError(f"input '{name}' has dtype {array.dtype}: expected {input_spec['dtype']} "
                             "(normalised pixels; see vitdeploy.preprocess)")
    channels = input_spec["channels"]
    if array.ndim != 4 or array.shape[1] != channels:
        hint = " (looks like NHWC: transpose to NCHW)" if array.ndim == 4 and array.shape[-1] == channels else ""
        raise VitdeployError(f"input '{name}' has shape {list(array.shape)}: expected NCHW "
                             f"[batch, {channels}, height, width]{hint}")
    batch = input_spec["batch"]
    if not batch["min"] <= array.shape[0] <= batch["max"]:
        raise VitdeployError(f"input '{name}' has batch {array.shape[0]}: expected {batch['min']}..{batch['max']}")
    problem = size_error(input_spec, array.shape[2], array.shape[3])
    if problem:
        raise VitdeployError(f"input '{name}': {problem}")
