"""vitdeploy.preprocess: size policy, torch-equal resize, image decoding rules and input checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vitdeploy.errors import VitdeployError
from vitdeploy.description import InputSpec, parse
from vitdeploy.inputs import check_feed, check_normalised_values
from vitdeploy.preprocess import input_hw, load_image, preprocess, resize_bilinear

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def spec(mode: str = "fixed", min_hw=(64, 64), max_hw=(64, 64), multiple: int = 32, **overrides) -> InputSpec:
    """An artifact `input` section as the exporter writes it (docs/ARTIFACT_FORMAT.md)."""
    return parse(InputSpec, {
        "name": "image", "layout": "NCHW", "dtype": "float32", "normalised_in_graph": False, "channels": 3,
        "color": "RGB", "mode": mode, "size_multiple": multiple, "min_hw": list(min_hw), "opt_hw": list(min_hw),
        "max_hw": list(max_hw), "batch": {"min": 1, "opt": 1, "max": 4}, "pixel_scale": 255.0, **IMAGENET,
        **overrides})


def check_input(array: np.ndarray, input_spec: InputSpec) -> None:
    """What vitdeploy.load(...).infer checks of a float32 batch a user passes: its layout, then its values."""
    check_feed(input_spec, {input_spec.name: array})
    check_normalised_values(input_spec, array)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("image_hw", "expected"),
    [
        ((100, 100), (96, 96)),
        ((112, 80), (128, 96)),  # 3.5 and 2.5 multiples: halves round up
        ((10, 1000), (64, 192)),  # clamped to min and max
        ((64, 192), (64, 192)),  # already valid: kept
    ],
)
def test_dynamic_size_policy(image_hw, expected) -> None:
    assert input_hw(image_hw, spec("dynamic", (64, 64), (256, 192))) == expected


def test_fixed_size_ignores_the_image_size() -> None:
    assert input_hw((1000, 37), spec("fixed", (224, 224), (224, 224))) == (224, 224)


def coordinate_rounding_bound(in_hw: tuple[int, int]) -> float:
    """How far torch's bilinear resize may legitimately differ from resize_bilinear on 0..255 pixels.

    Each source coordinate is ``scale * (dst + 0.5) - 0.5``. resize_bilinear (and the C++ demo, built
    with -ffp-contract=off) rounds the product and the difference separately in float32; torch's CPU kernel
    may fuse them into one FMA (torch 2.14.1's AVX-512 kernel does; 2.15 did not). The coordinates then
    differ by up to one float32 ulp of the largest one, a weight by as much, and a pixel by 255 times that,
    on top of 2 ulps of rounding at 255.
    """
    return 255 * 2 * float(np.spacing(np.float32(max(in_hw)))) + 3e-5


@pytest.mark.parametrize(("in_hw", "out_hw"), [((97, 131), (64, 64)), ((37, 45), (224, 160)), ((300, 20), (96, 128)),
                                               ((1, 1), (4, 4)), ((50, 60), (50, 60))])
def test_resize_matches_torch_interpolate(in_hw, out_hw) -> None:
    pixels = random_rgb(*in_hw).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None], size=out_hw, mode="bilinear",
                             align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    got = resize_bilinear(pixels, out_hw)
    assert got.dtype == np.float32 and got.shape == (*out_hw, 3)
    assert np.abs(got - expected).max() <= coordinate_rounding_bound(in_hw)


@pytest.mark.parametrize(("in_hw", "out_hw"), [((50, 60), (100, 120)), ((64, 96), (32, 48)), ((40, 40), (160, 20))])
def test_resize_equals_torch_where_coordinates_are_exact(in_hw, out_hw) -> None:
    """Power-of-two scales make every source coordinate exact in float32, fused or not: then torch and
    resize_bilinear agree to float32 rounding of the blend alone."""
    pixels = random_rgb(*in_hw, seed=1).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None], size=out_hw, mode="bilinear",
                             align_corners=False, antialias=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(resize_bilinear(pixels, out_hw) - expected).max() <= 3e-5  # 2 float32 ulps at 255


def test_preprocess_normalises_and_lays_out_nchw() -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[..., 0], rgb[3, 5] = 255, (10, 20, 30)
    tensor, info = preprocess(rgb, spec())
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor[0, 0, 0, 0] == np.float32((1 - np.float32(0.485)) / np.float32(0.229))
    expected = (np.array([10, 20, 30], np.float32) / 255 - np.float32(IMAGENET["mean"])) / np.float32(IMAGENET["std"])
    np.testing.assert_array_equal(tensor[0, :, 3, 5], expected)
    assert info == {"image_hw": [64, 64], "input_hw": [64, 64], "mode": "fixed"}


def test_preprocess_of_a_file_equals_preprocess_of_its_pixels(tmp_path: Path) -> None:
    rgb = random_rgb(75, 103)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    from_file, info = preprocess(tmp_path / "a.png", spec("dynamic", (32, 32), (256, 256)))
    np.testing.assert_array_equal(from_file, preprocess(rgb, spec("dynamic", (32, 32), (256, 256)))[0])
    assert info["image_hw"] == [75, 103] and info["input_hw"] == [64, 96]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1"])
def test_load_image_converts_pillow_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    image = Image.fromarray(random_rgb(9, 11)).convert(mode)
    image.save(tmp_path / "a.png")
    rgb = load_image(tmp_path / "a.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (9, 11, 3)
    np.testing.assert_array_equal(rgb, np.asarray(image.convert("RGB")))


def test_load_image_refuses_what_the_cpp_demo_cannot_read(tmp_path: Path) -> None:
    Image.fromarray(random_rgb(8, 8)).save(tmp_path / "a.bmp")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(random_rgb(8, 8)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    (tmp_path / "text.png").write_text("not an image")
    cases = {"a.bmp": "is a BMP image: expected PNG or JPEG", "grey16.png": "16-bit grey",
             "cmyk.jpg": "pixel mode CMYK", "text.png": "not a readable image", "missing.png": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(VitdeployError, match=message):
            load_image(tmp_path / name)


@pytest.mark.parametrize("image", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8),
                                   np.zeros((8, 8), np.uint8), [[0, 0, 0]]])
def test_preprocess_refuses_bad_arrays(image) -> None:
    with pytest.raises(VitdeployError, match=r"expected (a file path or )?a? ?uint8"):
        preprocess(image, spec())


def test_check_input_accepts_preprocessed_images_and_standard_normal_data() -> None:
    check_input(preprocess(random_rgb(64, 64), spec())[0], spec())
    check_input(np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32), spec())


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((1, 3, 64, 64), np.float64), "dtype float64: expected float32"),
        (np.zeros((1, 64, 64, 3), np.float32), "looks like NHWC"),
        (np.zeros((3, 64, 64), np.float32), r"expected NCHW"),
        (np.zeros((5, 3, 64, 64), np.float32), r"batch 5 is outside the artifact's batch range 1\.\.4"),
        (np.zeros((1, 3, 96, 64), np.float32), "differs from the artifact's fixed size 64x64"),
        (np.full((1, 3, 64, 64), np.nan, np.float32), "NaN or infinite"),
        (np.full((1, 3, 64, 64), 255.0, np.float32), r"channel 0 spans 255..255: expected normalised pixels"),
    ],
)
def test_check_input_says_what_was_expected(array: np.ndarray, message: str) -> None:
    with pytest.raises(VitdeployError, match=message):
        check_input(array, spec())
