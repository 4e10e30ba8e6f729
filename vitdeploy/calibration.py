"""Photos for int8: a calibration set and a held-out set from one folder, preprocessed exactly as `infer` does.

The split is deterministic (files sorted by name): the first `samples` calibrate, the next
`held_out` judge the int8 graph against eager fp32 and are never seen by the calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitdeploy.description import InputSpec
from vitdeploy.errors import VitdeployError
from vitdeploy.integrity import sha256_file
from vitdeploy.preprocess import load_image, preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class PhotoSplit:
    calibration: tuple[Path, ...]
    held_out: tuple[Path, ...]


def list_images(folder: Path) -> list[Path]:
    """The PNG and JPEG files of `folder`, sorted; a missing, empty or unreadable folder is one line."""
    if not folder.is_dir():
        raise VitdeployError(f"calibration folder {folder} does not exist: expected a folder of PNG or JPEG photos")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise VitdeployError(f"calibration folder {folder} holds no PNG or JPEG files: expected photos like the "
                             "ones the model will see")
    for path in images:
        load_image(path)  # an unreadable photo is named now, not halfway through calibration
    return images


def split_photos(folder: Path, samples: int, held_out: int) -> PhotoSplit:
    images = list_images(folder)
    if samples < 1 or held_out < 1:
        raise VitdeployError(f"--samples {samples} --held-out {held_out}: expected at least 1 of each")
    if len(images) < samples + held_out:
        raise VitdeployError(f"calibration folder {folder} has {len(images)} images: expected at least {samples + held_out}"
                             f" ({samples} to calibrate, {held_out} held out to check the int8 graph)")
    return PhotoSplit(calibration=tuple(images[:samples]), held_out=tuple(images[samples:samples + held_out]))


def photo_feeds(spec: InputSpec, paths: tuple[Path, ...] | list[Path]) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed per photo, preprocessed as `vitdeploy.load(...).infer` does (a dynamic artifact
    keeps each photo's size, rounded to the size rule)."""
    return [{spec.name: preprocess(path, spec)[0]} for path in paths]


def photo_records(paths: tuple[Path, ...]) -> list[dict[str, str]]:
    """Path and sha256 of each photo, for the artifact: which images calibrated or judged the graph."""
    return [{"path": str(path.resolve()), "sha256": sha256_file(path)} for path in paths]


def recorded_photos(records: list[dict[str, str]]) -> list[Path]:
    """The held-out photos recorded at quantisation, checked to be still there and unchanged."""
    paths = []
    for record in records:
        path = Path(record["path"])
        if not path.is_file() or sha256_file(path) != record["sha256"]:
            raise VitdeployError(f"held-out photo {path} recorded at quantisation is missing or changed: pass "
                                 "--images FOLDER with photos not used for calibration")
        paths.append(path)
    return paths
