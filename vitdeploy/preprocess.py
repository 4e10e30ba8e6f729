"""Image file or RGB array -> the batch an artifact expects (normalised float32 NCHW, or uint8 NHWC).

Everything is driven by the artifact's own `input` description (vitdeploy.json), and every step is
written so the C++ demo (cpp_demo/src/preprocess.cpp) reproduces it operation for operation in
float32: Python and C++ feed an engine the same numbers (the tests hold them to 1e-5; in practice
they agree exactly).

Size policy:
- `mode: fixed`: resize to the artifact's size (min_hw == max_hw); the aspect ratio is not kept.
- `mode: dynamic`: keep the image's size, each side rounded to the nearest multiple of
  `size_multiple` (halves round up), then clamped to min_hw..max_hw; resize to that.

Resize: bilinear with half-pixel centres and no antialiasing, on the float pixel values, i.e.
torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False).
It is deliberately the simplest reproducible filter (downscaling by a large factor aliases; resize
large photos beforehand if that matters). Then `(pixel / pixel_scale - mean) / std` per channel.
An artifact exported with --bake-preprocessing does that last step in its graph: it takes the
resized pixels as uint8 NHWC, rounded to the nearest integer when a resize happened.

Images are decoded as 8-bit RGB (grey is replicated, alpha is dropped without compositing, palettes
are expanded); EXIF orientation is not applied. Only PNG and JPEG files are read, the formats the
C++ demo reads too.
"""

from __future__ import annotations

import os
import stat
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitdeploy.description import InputSpec
from vitdeploy.errors import VitdeployError

FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a camera JPEG with extra frames; the first is the picture
# Pillow modes that convert to RGB the way libpng/libjpeg expand them in the C++ demo.
_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


_NOT_REGULAR = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def check_regular(path: str | os.PathLike[str], label: object) -> None:
    """Refuse, without opening it, a path that is not a regular file: reading a FIFO or a device would block
    or never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VitdeployError(f"image {label} does not exist: expected a PNG or JPEG file") from None
    except OSError as exc:
        raise VitdeployError(f"cannot read image {label}: {exc.strerror}") from None
    kind = next((kind for test, kind in _NOT_REGULAR if test(mode)), None if stat.S_ISREG(mode) else "special file")
    if kind:
        raise VitdeployError(f"{label} is a {kind}, not a regular file (not opened): expected a PNG or JPEG file")


_BAND_PIXELS = 1 << 20


def _rgb_array(image: Image.Image) -> np.ndarray:
    """The decoded pixels as uint8 HxWx3, converted to RGB in bands of rows: converting the whole image and
    Pillow's `tobytes` would hold three more copies of it (Pillow keeps RGB in 4 bytes a pixel). Conversion is
    per pixel, so the bands give the whole image's values."""
    image.load()
    width, height = image.size
    pixels = np.empty((height, width, 3), np.uint8)
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height))).convert("RGB")
        pixels[top:top + band.height] = np.asarray(band)
    return pixels


def load_image(path: str | os.PathLike[str] | BinaryIO, name: str | None = None) -> np.ndarray:
    """Read a PNG or JPEG file as a uint8 HxWx3 RGB array; `path` may be a binary file object (a served
    request's body), which errors call `name`. A path must name a regular file (`check_regular`)."""
    label = name or path
    if isinstance(path, (str, os.PathLike)):
        check_regular(path, label)
    try:
        with Image.open(path) as image:
            image_format, mode = image.format, image.mode
            if image_format not in FORMATS:
                raise VitdeployError(f"{label} is a {image_format} image: expected PNG or JPEG")
            if mode not in _MODES:
                raise VitdeployError(f"{label} has pixel mode {mode}: expected an 8-bit grey, palette, "
                                     "RGB or RGBA image (16-bit grey and CMYK are not supported)")
            return _rgb_array(image)
    except FileNotFoundError:
        raise VitdeployError(f"image {label} does not exist: expected a PNG or JPEG file") from None
    except UnidentifiedImageError:
        raise VitdeployError(f"{label} is not a readable image: expected a PNG or JPEG file") from None
    except OSError as exc:  # truncated or corrupt data
        raise VitdeployError(f"{label} could not be decoded ({exc}): expected a valid PNG or JPEG file") from None


def _round_to_multiple(value: int, multiple: int) -> int:
    return max(multiple, (value + multiple // 2) // multiple * multiple)


def input_hw(image_hw: tuple[int, int], input_spec: InputSpec) -> tuple[int, int]:
    """The network input size for an image of `image_hw`, by the size policy in the module docstring."""
    (min_h, min_w), (max_h, max_w) = input_spec.min_hw, input_spec.max_hw
    if input_spec.mode == "fixed":
        return int(min_h), int(min_w)
    if input_spec.mode != "dynamic":
        raise VitdeployError(f"input mode {input_spec.mode!r}: expected 'fixed' or 'dynamic'")
    multiple = int(input_spec.size_multiple)
    height = min(max(_round_to_multiple(image_hw[0], multiple), min_h), max_h)
    width = min(max(_round_to_multiple(image_hw[1], multiple), min_w), max_w)
    return int(height), int(width)


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis (half-pixel centres, edge-clamped), in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.where(lo < in_size - 1, lo + 1, lo)
    w_hi = src - lo.astype(np.float32)
    return lo, hi, np.float32(1.0) - w_hi, w_hi


def resize_bilinear(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC array (uint8 or float32) to float32; the C++ port performs the same float32 operations in
    the same order. Pixels are gathered before they are converted, and the axis resized first is the one that
    leaves the smaller intermediate, min(in_h x out_w, out_h x in_w) <= sqrt(in pixels x out pixels) pixels:
    a 1 x 1,000,000 image costs kilobytes, not a 224 x 1,000,000 buffer. Either order computes each output
    value by the same operations."""
    if image.shape[:2] == tuple(out_hw):
        return image.astype(np.float32, copy=False)
    y0, y1, wy0, wy1 = _axis_taps(image.shape[0], out_hw[0])
    x0, x1, wx0, wx1 = _axis_taps(image.shape[1], out_hw[1])
    wx0, wx1 = wx0[None, :, None], wx1[None, :, None]
    wy0, wy1 = wy0[:, None, None], wy1[:, None, None]
    if image.shape[0] * out_hw[1] <= out_hw[0] * image.shape[1]:  # rows kept first: in_h x out_w
        across = wx0 * image[:, x0].astype(np.float32) + wx1 * image[:, x1].astype(np.float32)
        return wy0 * across[y0] + wy1 * across[y1]
    top = wx0 * image[y0][:, x0].astype(np.float32) + wx1 * image[y0][:, x1].astype(np.float32)
    bottom = wx0 * image[y1][:, x0].astype(np.float32) + wx1 * image[y1][:, x1].astype(np.float32)
    return wy0 * top + wy1 * bottom


def _checked_rgb(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise VitdeployError(f"image is a {type(image).__name__}: expected a file path or a uint8 HxWx3 RGB array")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise VitdeployError(f"image array has dtype {image.dtype} and shape {list(image.shape)}: "
                             "expected uint8 [height, width, 3] RGB")
    return image


def normalise(pixels: np.ndarray, input_spec: InputSpec) -> np.ndarray:
    """float32 NCHW `(pixel / pixel_scale - mean) / std` from [N, H, W, 3] pixels (uint8 or float32)."""
    mean = np.asarray(input_spec.mean, dtype=np.float32)
    std = np.asarray(input_spec.std, dtype=np.float32)
    normalised = (pixels.astype(np.float32) / np.float32(input_spec.pixel_scale) - mean) / std
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


def preprocess(image: str | os.PathLike[str] | np.ndarray,
               input_spec: InputSpec) -> tuple[np.ndarray, dict[str, Any]]:
    """The one-image batch an artifact takes, plus where it came from (sizes, mode): [1, 3, H, W]
    normalised float32, or [1, H, W, 3] uint8 pixels (rounded after a resize) for an artifact that
    normalises in its graph."""
    rgb = _checked_rgb(load_image(image) if isinstance(image, (str, os.PathLike)) else image)
    out_hw = input_hw(rgb.shape[:2], input_spec)
    info = {"image_hw": [int(rgb.shape[0]), int(rgb.shape[1])], "input_hw": list(out_hw),
            "mode": input_spec.mode}
    if input_spec.normalised_in_graph:
        if rgb.shape[:2] != out_hw:
            rgb = np.clip(np.rint(resize_bilinear(rgb, out_hw)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(rgb[None]), info
    return normalise(resize_bilinear(rgb, out_hw)[None], input_spec), info
