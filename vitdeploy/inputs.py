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


def pixels_in_graph(input_spec: dict[str, Any]) -> bool:
    """Whether the artifact takes raw uint8 NHWC pixels and normalises them in its graph
    (exported with --bake-preprocessing); otherwise it takes normalised float32 NCHW."""
    return bool(input_spec.get("normalised_in_graph", False))


def layout_shape(input_spec: dict[str, Any], batch: Any, height: Any, width: Any) -> list[Any]:
    """[batch, height, width] with the channel axis where the artifact's layout puts it."""
    channels = input_spec["channels"]
    if input_spec["layout"] == "NHWC":
        return [batch, height, width, channels]
    return [batch, channels, height, width]


def axis_names(input_spec: dict[str, Any]) -> list[str]:
    """The names of the input's four axes, in its layout."""
    return ["batch", "height", "width", "channels"] if input_spec["layout"] == "NHWC" else \
        ["batch", "channels", "height", "width"]


def image_hw(input_spec: dict[str, Any], shape: Any) -> tuple[int, int]:
    """(height, width) of a batch shape in the artifact's layout."""
    return (int(shape[1]), int(shape[2])) if input_spec["layout"] == "NHWC" else (int(shape[2]), int(shape[3]))


def dtype_hint(input_spec: dict[str, Any]) -> str:
    """What the artifact's input values are, for error messages."""
    if pixels_in_graph(input_spec):
        return "raw RGB pixels 0..255: the artifact normalises them itself"
    return "normalised pixels; see vitdeploy.preprocess"


def check_image_batch(input_spec: dict[str, Any], array: Any) -> None:
    """Raise a VitdeployError saying what was expected if `array` cannot be fed to the artifact."""
    name = input_spec["name"]
    if not isinstance(array, np.ndarray):
        raise VitdeployError(f"input '{name}' is a {type(array).__name__}: expected a numpy.ndarray")
    if array.dtype != np.dtype(input_spec["dtype"]):
        raise VitdeployError(f"input '{name}' has dtype {array.dtype}: expected {input_spec['dtype']} "
                             f"({dtype_hint(input_spec)})")
    channels, layout = input_spec["channels"], input_spec["layout"]
    channel_axis = 3 if layout == "NHWC" else 1
    if array.ndim != 4 or array.shape[channel_axis] != channels:
        other = "NCHW" if layout == "NHWC" else "NHWC"
        looks_other = array.ndim == 4 and array.shape[4 - channel_axis] == channels
        hint = f" (looks like {other}: transpose to {layout})" if looks_other else ""
        expected = ", ".join(map(str, layout_shape(input_spec, "batch", "height", "width")))
        raise VitdeployError(f"input '{name}' has shape {list(array.shape)}: expected {layout} [{expected}]{hint}")
    batch = input_spec["batch"]
    if not batch["min"] <= array.shape[0] <= batch["max"]:
        raise VitdeployError(f"input '{name}' has batch {array.shape[0]}: expected {batch['min']}..{batch['max']}")
    problem = size_error(input_spec, *image_hw(input_spec, array.shape))
    if problem:
        raise VitdeployError(f"input '{name}': {problem}")
