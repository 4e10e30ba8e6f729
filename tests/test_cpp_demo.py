"""The C++ demo (cpp_demo/) against Python: preprocessing, pyramid consumers and, on a GPU, TensorRT outputs.

Builds cpp_demo with CMake into a temporary directory. Needs cmake, a C++17 compiler and
`apt-get install libpng-dev libjpeg-dev nlohmann-json3-dev` (skipped with that reason otherwise).
The TensorRT program vitdeploy_demo is built too when CMake finds TensorRT and CUDA (environment
TENSORRT_ROOT, or TENSORRT_INCLUDE_DIR and TENSORRT_LIBRARY, are passed on to CMake).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitdeploy.preprocess import preprocess, resize_bilinear

CPP_DEMO = Path(__file__).resolve().parents[1] / "cpp_demo"
APT_PACKAGES = "cmake g++ libpng-dev libjpeg-dev nlohmann-json3-dev"
PREPROCESS_MAX_ABS = 1e-5
TENSORRT_HINTS = ("TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", "TENSORRT_LIBRARY")  # passed on to CMake
# matplotlib's inferno at 0, 1/4, 1/2, 3/4, 1 and the 50/50 blend: cpp_demo/src/pyramid.cpp.
INFERNO = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip(f"cmake is not installed (apt-get install {APT_PACKAGES})")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        pytest.skip(f"no C++ compiler (apt-get install {APT_PACKAGES})")
    build = tmp_path_factory.mktemp("cpp_demo_build")
    hints = [f"-D{name}={os.environ[name]}" for name in TENSORRT_HINTS if os.environ.get(name)]
    configure = subprocess.run(["cmake", "-S", str(CPP_DEMO), "-B", str(build), *hints], capture_output=True,
                               text=True)
    if configure.returncode:
        missing = re.findall(r"Could NOT find (\w+)|package configuration file provided by \"(\w+)\"",
                             configure.stderr)
        if missing:
            names = sorted({a or b for a, b in missing})
            pytest.skip(f"cpp_demo needs {', '.join(names)}: apt-get install {APT_PACKAGES}")
        pytest.fail(f"cmake configure failed:\n{configure.stdout}\n{configure.stderr}")
    compiled = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert compiled.returncode == 0, f"cpp_demo build failed:\n{compiled.stdout[-4000:]}\n{compiled.stderr[-4000:]}"
    return build


def run_tool(build: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(build / "vitdeploy_demo_tool"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def input_spec(mode: str, min_hw, max_hw, multiple: int, baked: bool = False) -> dict:
    """The input section of a plain artifact, or with `baked` of one exported with --bake-preprocessing."""
    spec = {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 3, "color": "RGB", "mode": mode,
            "size_multiple": multiple, "min_hw": list(min_hw), "opt_hw": list(min_hw), "max_hw": list(max_hw),
            "batch": {"min": 1, "opt": 1, "max": 4}, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "pixel_scale": 255.0}
    if baked:
        spec.update(layout="NHWC", dtype="uint8", normalised_in_graph=True)
    return spec


OUTPUTS = [
    {"name": "stride8", "kind": "feature", "index": 0, "channels": 6, "stride": 8, "layout": "NCHW"},
    {"name": "stride16", "kind": "feature", "index": 1, "channels": 10, "stride": 16, "layout": "NCHW"},
    {"name": "stride32", "kind": "feature", "index": 2, "channels": 12, "stride": 32, "layout": "NCHW"},
    {"name": "embedding", "kind": "embedding", "index": None, "channels": 12, "stride": None, "layout": "NC"},
]


def write_sidecar(directory: Path, spec: dict) -> Path:
    """A vitdeploy.json as the exporter writes it (docs/ARTIFACT_FORMAT.md), for the given input section."""
    path = directory / "vitdeploy.json"
    path.write_text(json.dumps({"format": "vitdeploy.pyramid", "format_version": 2, "recipe": "cpp_demo_test",
                                "timm_name": "none", "family": "hiera", "input": spec, "outputs": OUTPUTS}))
    return path


def synthetic_image(height: int = 75, width: int = 103) -> np.ndarray:
    """Gradients, a disc and noise: smooth and sharp content for the resize to get wrong."""
    yy, xx = np.mgrid[0:height, 0:width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (height / 4) ** 2) * 120
    noise = np.random.default_rng(0).integers(-30, 30, (height, width, 3))
    rgb = np.stack([xx * 255 // width, yy * 255 // height, disc + 60], axis=-1) + noise
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("images")
    rgb = Image.fromarray(synthetic_image())
    paths = {"png": directory / "image.png", "jpg": directory / "image.jpg", "palette": directory / "palette.png"}
    rgb.save(paths["png"])
    rgb.save(paths["jpg"], quality=85)  # 4:2:0 chroma: exercises libjpeg's upsampling like Pillow's
    rgb.convert("P").save(paths["palette"])
    return paths


@pytest.mark.parametrize(
    ("image", "spec"),
    [
        ("png", input_spec("fixed", (64, 64), (64, 64), 32)),  # downscale
        ("png", input_spec("fixed", (224, 160), (224, 160), 32)),  # upscale, non-square
        ("png", input_spec("dynamic", (32, 32), (256, 256), 32)),  # 75x103 -> 64x96
        ("jpg", input_spec("dynamic", (32, 32), (128, 128), 16)),  # 75x103 -> 80x96
        ("palette", input_spec("dynamic", (64, 64), (64, 64), 32)),  # clamped
        ("jpg", input_spec("dynamic", (16, 16), (512, 512), 1)),  # no resize: decoding alone
    ],
    ids=["fixed-down", "fixed-up", "dynamic-png", "dynamic-jpeg", "dynamic-clamped", "jpeg-decode"],
)
def test_cpp_preprocessing_matches_python(build_dir: Path, images: dict[str, Path], tmp_path: Path, image: str,
                                          spec: dict) -> None:
    sidecar = write_sidecar(tmp_path, spec)
    result = run_tool(build_dir, "preprocess", sidecar, images[image], tmp_path / "input.npy")
    assert result.returncode == 0, result.stderr
    cpp = np.load(tmp_path / "input.npy")
    python, info = preprocess(images[image], spec)
    assert cpp.dtype == np.float32 and cpp.shape == python.shape == (1, 3, *info["input_hw"])
    assert np.abs(cpp - python).max() <= PREPROCESS_MAX_ABS


@pytest.mark.parametrize(
    ("image", "spec", "halves"),
    [
        ("png", input_spec("fixed", (150, 206), (150, 206), 1, baked=True), True),  # 2x upscale
        ("jpg", input_spec("dynamic", (32, 32), (128, 128), 16, baked=True), False),  # 75x103 -> 80x96
        ("png", input_spec("dynamic", (16, 16), (512, 512), 1, baked=True), False),  # a valid size already
    ],
    ids=["upscale-halves", "dynamic-jpeg", "no-resize"],
)
def test_cpp_baked_preprocessing_matches_python(build_dir: Path, images: dict[str, Path], tmp_path: Path, image: str,
                                                spec: dict, halves: bool) -> None:
    """An artifact that normalises in its graph: both give the same uint8 NHWC pixels, exactly."""
    sidecar = write_sidecar(tmp_path, spec)
    result = run_tool(build_dir, "preprocess", sidecar, images[image], tmp_path / "input.npy")
    assert result.returncode == 0, result.stderr
    cpp = np.load(tmp_path / "input.npy")
    python, info = preprocess(images[image], spec)
    assert cpp.dtype == python.dtype == np.uint8 and cpp.shape == python.shape == (1, *info["input_hw"], 3)
    assert np.array_equal(cpp, python)
    rgb = np.asarray(Image.open(images[image]).convert("RGB"))
    if info["input_hw"] == info["image_hw"]:
        assert np.array_equal(cpp[0], rgb)  # passed through unchanged
    if halves:  # thousands of resized values end in .5: this case tells rounding to even (np.rint) from rounding up
        resized = resize_bilinear(rgb.astype(np.float32), info["input_hw"])
        assert (np.rint(resized) != np.floor(resized + 0.5)).sum() > 1000


def overlay_reference(rgb: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """The heatmap picture computed with numpy the way pyramid.cpp describes it."""
    scaled = (norm - norm.min()) / (norm.max() - norm.min())
    heat = resize_bilinear(scaled[:, :, None], rgb.shape[:2])[..., 0]
    v = np.clip(heat, 0, 1) * np.float32(4)
    k = np.minimum(v.astype(np.int64), 3)
    f = (v - k.astype(np.float32))[..., None]
    color = INFERNO[k] * (np.float32(1) - f) + INFERNO[k + 1] * f
    blended = np.float32(0.5) * rgb.astype(np.float32) + np.float32(0.5) * color
    return np.clip(np.floor(blended + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("baked", [False, True], ids=["float32", "baked"])
def test_cpp_consumers_match_numpy(build_dir: Path, images: dict[str, Path], tmp_path: Path, baked: bool) -> None:
    spec = input_spec("dynamic", (32, 32), (256, 256), 32, baked)
    sidecar = write_sidecar(tmp_path, spec)
    height, width = preprocess(images["png"], spec)[1]["input_hw"]
    rng = np.random.default_rng(1)
    pyramid_dir = tmp_path / "pyramid"
    pyramid_dir.mkdir()
    levels = {}
    for i, output in enumerate(OUTPUTS):
        shape = ([1, output["channels"]] if output["kind"] == "embedding"
                 else [1, output["channels"], height // output["stride"], width // output["stride"]])
        levels[output["name"]] = (rng.standard_normal(shape) * (i + 1) + i).astype(np.float32)
        np.save(pyramid_dir / f"{output['name']}.npy", levels[output["name"]])

    result = run_tool(build_dir, "consume", sidecar, images["png"], pyramid_dir, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["input_hw"] == [height, width] and stats["image_hw"] == [75, 103]
    rgb = np.asarray(Image.open(images["png"]))
    for entry, output in zip(stats["levels"], OUTPUTS, strict=True):
        level = levels[output["name"]].astype(np.float64)
        assert entry["name"] in result.stdout
        assert entry["shape"] == list(level.shape) and entry["stride"] == output["stride"]
        np.testing.assert_allclose([entry["mean"], entry["std"]], [level.mean(), level.std()], rtol=1e-9, atol=1e-12)
        assert (entry["min"], entry["max"]) == (level.min(), level.max())
        if output["kind"] == "embedding":
            assert entry["heatmap"] is None
            continue
        norm = np.load(tmp_path / "out" / f"{output['name']}_norm.npy")
        expected_norm = np.sqrt((level[0] ** 2).sum(axis=0)).astype(np.float32)
        np.testing.assert_allclose(norm, expected_norm, rtol=1e-6)
        picture = np.asarray(Image.open(tmp_path / "out" / entry["heatmap"]))
        difference = np.abs(picture.astype(int) - overlay_reference(rgb, expected_norm).astype(int))
        assert picture.shape == rgb.shape and difference.max() <= 1 and (difference == 0).mean() >= 0.999


def test_cpp_errors_are_one_line(build_dir: Path, images: dict[str, Path], tmp_path: Path) -> None:
    sidecar = write_sidecar(tmp_path, input_spec("fixed", (64, 64), (64, 64), 32))
    (tmp_path / "text.png").write_text("not an image")
    pyramid_dir = tmp_path / "pyramid"
    pyramid_dir.mkdir()
    for output in OUTPUTS:
        np.save(pyramid_dir / f"{output['name']}.npy", np.zeros((1, output["channels"], 3, 3), np.float32))
    uint8_nchw = input_spec("fixed", (64, 64), (64, 64), 32) | {"dtype": "uint8"}
    (tmp_path / "uint8_nchw").mkdir()
    unsupported = write_sidecar(tmp_path / "uint8_nchw", uint8_nchw)
    cases = [
        (("preprocess", tmp_path / "missing.json", images["png"], tmp_path / "x.npy"), "cannot open .*missing.json"),
        (("preprocess", sidecar, tmp_path / "missing.png", tmp_path / "x.npy"), "missing.png does not exist"),
        (("preprocess", sidecar, tmp_path / "text.png", tmp_path / "x.npy"), "neither PNG nor JPEG"),
        (("preprocess", images["png"], images["png"], tmp_path / "x.npy"), "is not valid JSON"),
        (("preprocess", unsupported, images["png"], tmp_path / "x.npy"),
         r"input is uint8 NCHW, 3 channels, normalised_in_graph false: expected float32 NCHW "
         r"\(normalised_in_graph false\) or uint8 NHWC \(normalised_in_graph true\)"),
        (("consume", sidecar, images["png"], pyramid_dir, tmp_path / "out"),
         "output 'stride8' has shape 1x6x3x3: expected 1x6x8x8 from the description"),
        (("consume", sidecar, images["png"], tmp_path, tmp_path / "out"), "cannot open .*stride8.npy"),
    ]
    for args, message in cases:
        result = run_tool(build_dir, *args)
        assert result.returncode == 1, args
        assert len(result.stderr.splitlines()) == 1 and re.search(message, result.stderr), result.stderr
    assert run_tool(build_dir, "preprocess").returncode == 2  # usage


@pytest.mark.gpu
@pytest.mark.parametrize("baked", [False, True], ids=["float32", "baked"])
def test_demo_matches_python_tensorrt_runner(build_dir: Path, images: dict[str, Path], tmp_path: Path,
                                             baked: bool) -> None:
    """vitdeploy_demo's input and outputs equal Python preprocessing + TensorRTRunner on the same engine
    (a plain engine, and one taking uint8 NHWC pixels)."""
    from vitdeploy.engine.backend import is_installed, use_backend
    from vitdeploy.engine.gpu import compute_capability

    demo = build_dir / "vitdeploy_demo"
    if not demo.exists():
        pytest.skip("vitdeploy_demo was not built: CMake found no TensorRT/TensorRT-RTX (set TENSORRT_ROOT) or CUDA")
    if compute_capability() is None:
        pytest.skip("no CUDA GPU")
    backend, version = subprocess.run([str(demo), "--version"], capture_output=True, text=True).stdout.split()[:2]
    if not is_installed(backend):
        pytest.skip(f"the Python module {backend} is not installed, so no engine for the demo can be built")
    if use_backend(backend).__version__.split(".")[:3] != version.split("."):
        pytest.skip(f"vitdeploy_demo links {backend} {version} but Python has {use_backend(backend).__version__}: "
                    "an engine only loads on the version that built it")

    from vitdeploy.engine.build import build_engine
    from vitdeploy.export.onnx_export import ExportOptions, export_artifact
    from vitdeploy.recipes import load_recipe
    from vitdeploy.runners.tensorrt import TensorRTRunner

    artifact = export_artifact(load_recipe("vit_small"), tmp_path / "vit_small",
                               ExportOptions(size=(64, 96), bake_preprocessing=baked))
    engine = build_engine(artifact, backend=backend, precision="fp32")
    result = subprocess.run([str(demo), str(engine), str(images["png"]), "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(Path(f"{engine}.json").read_text())
    tensor, _ = preprocess(images["png"], sidecar["input"])
    demo_input = np.load(tmp_path / "demo" / "input.npy")
    assert demo_input.dtype == tensor.dtype and demo_input.shape == tensor.shape
    assert np.abs(demo_input.astype(np.float64) - tensor).max() <= PREPROCESS_MAX_ABS  # exact for uint8
    with TensorRTRunner(engine) as runner:
        expected = runner.infer({"image": tensor})
    for output in sidecar["outputs"]:
        got = np.load(tmp_path / "demo" / f"{output['name']}.npy")
        want = expected[output["name"]]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), output["name"]
        if output["kind"] == "feature":
            assert (tmp_path / "demo" / f"{output['name']}_heatmap.png").is_file()
