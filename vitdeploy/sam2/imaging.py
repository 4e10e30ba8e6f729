"""SAM2's image side in numpy: its preprocessing and the upsampling of its low-resolution masks.

SAM2ImagePredictor resizes the image to S x S with torchvision's antialiased bilinear `Resize` (on float
pixels in 0..1) then normalises with ImageNet mean/std; PIL's bilinear resize of a float ("F") image is
the filter torchvision's antialias port reproduces (3e-7 apart on scikit-image's photos). Masks are
upsampled with `vitdeploy.preprocess.resize_bilinear`, F.interpolate(bilinear, align_corners=False).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vitdeploy.preprocess import _checked_rgb, load_image, resize_bilinear


def load_rgb(image: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
    """A uint8 HxWx3 RGB array (checked), from an array or a PNG/JPEG path."""
    return _checked_rgb(load_image(image) if isinstance(image, (str, os.PathLike)) else image)


def resize_antialiased(pixels: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 pixels scaled to 0..1 and resized to size x size as torchvision's Resize(antialias=True): [3, S, S]."""
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(scaled[..., c]), "F")
                                .resize((size, size), Image.Resampling.BILINEAR)) for c in range(3)])


def sam2_input(pixels: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """SAM2Transforms: [1, 3, S, S] float32, resized (antialiased) and normalised."""
    resized = resize_antialiased(pixels, size)
    mean_, std_ = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return np.ascontiguousarray(((resized - mean_) / std_)[None], dtype=np.float32)


def upsample_masks(masks: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """[C, h, w] logits -> [C, H, W]: SAM2's postprocess_masks (F.interpolate bilinear, align_corners=False)."""
    return np.ascontiguousarray(resize_bilinear(masks.transpose(1, 2, 0).astype(np.float32), out_hw)
                                .transpose(2, 0, 1))
