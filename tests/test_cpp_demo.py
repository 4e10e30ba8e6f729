"""The C++ demo (cpp_demo/) against Python: preprocessing, pyramid consumers, OpenVINO outputs on exported
models and real photos, its load-time errors, and, on a GPU, TensorRT outputs.

Builds cpp_demo with CMake into a temporary directory. Needs cmake, a C++17 compiler and
`apt-get install libpng-dev libjpeg-dev nlohmann-json3-dev libssl-dev` (skipped with that reason otherwise).
vitdeploy_demo gets the OpenVINO runtime when this Python has the openvino wheel (its CMake package is
passed on), and the TensorRT runtime when CMake finds TensorRT and CUDA (environment TENSORRT_ROOT, or
TENSORRT_INCLUDE_DIR and TENSORRT_LIBRARY, are passed on to CMake). A runtime CMake finds is tested, never
skipped: the OpenVINO tests fail if openvino is importable but the demo lacks it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitdeploy
from conftest import RECIPES, export_for_test
from vitdeploy.description import Description, InputSpec, parse
from vitdeploy.tools.doctor import cpp_demo_fact
from vitdeploy.engine import Engine, build as build_engine
from vitdeploy.engine.tensorrt_flavour import use_backend
from vitdeploy.export.onnx_export import ExportOptions, export_artifact
from vitdeploy.tools.hardware import compute_capability
from vitdeploy.optional import is_installed
from vitdeploy.preprocess import preprocess, resize_bilinear
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.runners.openvino import OpenVINORunner
from vitdeploy.runners.tensorrt import TensorRTRunner
from vitdeploy.runners.torch import TorchRunner

CPP_DEMO = Path(__file__).resolve().parents[1] / "cpp_demo"
APT_PACKAGES = "cmake g++ libpng-dev libjpeg-dev nlohmann-json3-dev libssl-dev"
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
    if importlib.util.find_spec("openvino"):  # the wheel's CMake package, as the README's build line passes it
        hints.append(f"-DOpenVINO_DIR={Path(importlib.util.find_spec('openvino').origin).parent / 'cmake'}")
    configure = subprocess.run(["cmake", "-S", str(CPP_DEMO), "-B", str(build), *hints], capture_output=True,
                               text=True)
    if configure.returncode:
        missing = re.findall(r"Could NOT find (\w+)|package configuration file provided by \"(\w+)\"",
                             configure.stderr)
        if missing:
            names = sorted({a or b for a, b in missing})
            pytest.skip(f"cpp_demo needs {', '.join(names)}: apt-get install {APT_PACKAGES}")
        pytest.fail(f"cmake configure failed:\n{configure.stdout}\n{configure.stderr}")
    compiled = subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "vitdeploy_demo_tool",
                               "vitdeploy_demo"], capture_output=True, text=True)
    assert compiled.returncode == 0, f"cpp_demo build failed:\n{compiled.stdout[-4000:]}\n{compiled.stderr[-4000:]}"
    return build


def run_tool(build: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(build / "vitdeploy_demo_tool"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def input_spec(mode: str, min_hw, max_hw, multiple: int, baked: bool = False) -> dict:
    """The input section of a plain artifact, or with `baked` of one exported with --bake-preprocessing."""
    spec = {"name": "image", "layout": "NCHW", "dtype": "float32", "normalised_in_graph": False, "channels": 3,
            "color": "RGB", "mode": mode,
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


def write_description(directory: Path, spec: dict) -> Path:
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
    description = write_description(tmp_path, spec)
    result = run_tool(build_dir, "preprocess", description, images[image], tmp_path / "input.npy")
    assert result.returncode == 0, result.stderr
    cpp = np.load(tmp_path / "input.npy")
    python, info = preprocess(images[image], parse(InputSpec, spec))
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
    description = write_description(tmp_path, spec)
    result = run_tool(build_dir, "preprocess", description, images[image], tmp_path / "input.npy")
    assert result.returncode == 0, result.stderr
    cpp = np.load(tmp_path / "input.npy")
    python, info = preprocess(images[image], parse(InputSpec, spec))
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
    description = write_description(tmp_path, spec)
    height, width = preprocess(images["png"], parse(InputSpec, spec))[1]["input_hw"]
    rng = np.random.default_rng(1)
    pyramid_dir = tmp_path / "pyramid"
    pyramid_dir.mkdir()
    levels = {}
    for i, output in enumerate(OUTPUTS):
        shape = ([1, output["channels"]] if output["kind"] == "embedding"
                 else [1, output["channels"], height // output["stride"], width // output["stride"]])
        levels[output["name"]] = (rng.standard_normal(shape) * (i + 1) + i).astype(np.float32)
        np.save(pyramid_dir / f"{output['name']}.npy", levels[output["name"]])

    result = run_tool(build_dir, "consume", description, images["png"], pyramid_dir, tmp_path / "out")
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
    description = write_description(tmp_path, input_spec("fixed", (64, 64), (64, 64), 32))
    (tmp_path / "text.png").write_text("not an image")
    pyramid_dir = tmp_path / "pyramid"
    pyramid_dir.mkdir()
    for output in OUTPUTS:
        np.save(pyramid_dir / f"{output['name']}.npy", np.zeros((1, output["channels"], 3, 3), np.float32))
    uint8_nchw = input_spec("fixed", (64, 64), (64, 64), 32) | {"dtype": "uint8"}
    (tmp_path / "uint8_nchw").mkdir()
    unsupported = write_description(tmp_path / "uint8_nchw", uint8_nchw)
    cases = [
        (("preprocess", tmp_path / "missing.json", images["png"], tmp_path / "x.npy"), "cannot open .*missing.json"),
        (("preprocess", description, tmp_path / "missing.png", tmp_path / "x.npy"), "missing.png does not exist"),
        (("preprocess", description, tmp_path / "text.png", tmp_path / "x.npy"), "neither PNG nor JPEG"),
        (("preprocess", images["png"], images["png"], tmp_path / "x.npy"), "is not valid JSON"),
        (("preprocess", unsupported, images["png"], tmp_path / "x.npy"),
         r"input is uint8 NCHW, 3 channels, normalised_in_graph false: expected float32 NCHW "
         r"\(normalised_in_graph false\) or uint8 NHWC \(normalised_in_graph true\)"),
        (("consume", description, images["png"], pyramid_dir, tmp_path / "out"),
         "output 'stride8' has shape 1x6x3x3: expected 1x6x8x8 from the description"),
        (("consume", description, images["png"], tmp_path, tmp_path / "out"), "cannot open .*stride8.npy"),
    ]
    for args, message in cases:
        result = run_tool(build_dir, *args)
        assert result.returncode == 1, args
        assert len(result.stderr.splitlines()) == 1 and re.search(message, result.stderr), result.stderr
    assert run_tool(build_dir, "preprocess").returncode == 2  # usage


# vitdeploy_demo through OpenVINO on exported timm models (random weights) and real photos.

OPENVINO_MAX_ABS = 1e-5  # C++ against the Python OpenVINO runner on the same IR, input and device
# name: (test recipe, export options). Together: fixed and dynamic, ViT and Hiera, float32 and uint8 input.
MODELS = {
    "vit-dynamic": ("vit_tiny_dynamic.toml", {}),
    "vit-fixed-baked": ("vit_tiny_dynamic.toml", {"dynamic": False, "size": (64, 96), "bake_preprocessing": True}),
    "hiera-dynamic-baked": ("hiera_abswin_dynamic.toml", {"bake_preprocessing": True}),
}


def python_openvino_outputs(engine: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """vitdeploy's Python OpenVINO runner on the same engine and batch."""
    with OpenVINORunner(Engine.at(engine)) as runner:
        return dict(runner.infer({runner.description.input.name: batch}))


def eager_outputs(artifact: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The unmodified timm model in PyTorch, with the artifact's weights (vitdeploy verify's reference)."""
    description = Description.read(artifact / "vitdeploy.json")
    with TorchRunner(description) as runner:
        return dict(runner.infer({description.input.name: batch}))


@pytest.fixture(scope="module")
def demo(build_dir: Path) -> Path:
    """vitdeploy_demo with the OpenVINO runtime; it must have it whenever this Python has openvino."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install -e '.[test]'), so CMake had no OpenVINO to build with")
    program = build_dir / "vitdeploy_demo"
    assert "openvino" in compiled_runtimes(program), "CMake was given openvino's CMake package but did not use it"
    return program


@pytest.fixture(scope="module")
def openvino_engine(tmp_path_factory: pytest.TempPathFactory, vit_tiny_dynamic_artifact: Path):
    """engine(model, precision) -> the OpenVINO engine of MODELS[model], exported and built once."""
    artifacts: dict[str, Path] = {}
    engines: dict[tuple[str, str], Path] = {}

    def engine(model: str, precision: str = "fp32") -> Path:
        if model not in artifacts:
            directory = tmp_path_factory.mktemp("openvino") / model
            recipe, options = MODELS[model]
            if model == "vit-dynamic":  # the session's export of the same recipe; engines are added to a copy
                shutil.copytree(vit_tiny_dynamic_artifact, directory)
            else:
                export_for_test(str(RECIPES / recipe), directory, **options)
            artifacts[model] = directory
        if (model, precision) not in engines:
            engines[model, precision] = build_engine(artifacts[model], "openvino", precision,
                                                     progress=Progress(2, enabled=False)).path
        return engines[model, precision]

    return engine


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scikit-image's sample photographs as files (PNG and JPEG), and a small copy that a dynamic model
    takes at (nearly) its own size instead of clamping it."""
    data = Path(pytest.importorskip("skimage.data", reason="scikit-image is in the test extra").__file__).parent
    paths = {name: data / name for name in ("chelsea.png", "rocket.jpg", "astronaut.png", "coffee.png")}
    small = tmp_path_factory.mktemp("photos") / "coffee_small.png"
    Image.open(paths["coffee.png"]).resize((70, 45), Image.Resampling.BILINEAR).save(small)
    return paths | {"coffee_small.png": small}


def compiled_runtimes(demo: Path) -> dict[str, str]:
    """Runtime name -> version, from `vitdeploy_demo --version` (one line per runtime compiled in)."""
    versions = subprocess.run([str(demo), "--version"], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^(\w+) (\d+\.\d+\.\d+) ", versions, re.M))


def test_doctor_reports_the_runtimes_compiled_in(build_dir: Path) -> None:
    """`vitdeploy doctor --cpp-demo` runs the real demo's --version: one runtime per line there, joined here."""
    demo = build_dir / "vitdeploy_demo"
    versions = subprocess.run([str(demo), "--version"], capture_output=True, text=True, check=True).stdout
    fact = cpp_demo_fact(demo)
    if not compiled_runtimes(demo):
        assert fact.available and fact.why_not.startswith("no runtime compiled in")
        return
    assert fact.available and fact.why_not is None
    assert fact.line() == f"cpp_demo       -             ok: {demo}: " + "; ".join(versions.strip().splitlines())


def run_demo(demo: Path, engine: Path, image: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(demo), str(engine), str(image), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize(
    ("model", "photo"),
    [
        ("vit-dynamic", "chelsea.png"),  # 300x451 -> clamped to 128x96
        ("vit-dynamic", "coffee_small.png"),  # 45x70 -> 48x64 (rounded to multiples of 16, within the range)
        ("vit-fixed-baked", "rocket.jpg"),  # JPEG -> 64x96 uint8
        ("hiera-dynamic-baked", "astronaut.png"),  # 512x512 -> 128x160 uint8, four strides
    ],
)
def test_demo_openvino_matches_python_and_eager(demo: Path, openvino_engine, photos: dict[str, Path],
                                                tmp_path: Path, model: str, photo: str) -> None:
    engine = openvino_engine(model)
    result = run_demo(demo, engine, photos[photo], tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    description = json.loads(Path(f"{engine}.json").read_text())
    batch, info = preprocess(photos[photo], parse(InputSpec, description["input"]))
    cpp_input = np.load(tmp_path / "input.npy")
    assert cpp_input.dtype == batch.dtype and np.array_equal(cpp_input, batch)
    python = python_openvino_outputs(engine, batch)
    eager = eager_outputs(engine.parent, batch)
    tolerance = description["tolerance"]["fp32"]["max_abs"]
    for output in description["outputs"]:
        name = output["name"]
        cpp = np.load(tmp_path / f"{name}.npy")
        assert cpp.shape == python[name].shape == eager[name].shape, name
        assert np.abs(cpp - python[name]).max() <= OPENVINO_MAX_ABS, name
        assert np.abs(cpp - eager[name]).max() <= tolerance, name
        assert f"{name} " in result.stdout and (tmp_path / f"{name}_heatmap.png").is_file()
    assert f"image {info['image_hw'][0]}x{info['image_hw'][1]} -> input {'x'.join(map(str, batch.shape))}" \
        in result.stdout


def test_demo_openvino_runs_a_sam2_artifact(demo: Path, sam2_artifact: Path, photos: dict[str, Path],
                                            tmp_path: Path) -> None:
    """SAM2's image encoder (tests/recipes/sam2_dynamic.toml) like any artifact: a heatmap per feature level, the
    position encodings saved beside them (no heatmap: they do not depend on the image); every output equals
    Python's OpenVINO on the same IR and ONNX Runtime on model.onnx."""
    artifact = tmp_path / "sam2"
    shutil.copytree(sam2_artifact, artifact)
    engine = build_engine(artifact, "openvino", "fp32", progress=Progress(2, enabled=False)).path
    result = run_demo(demo, engine, photos["astronaut.png"], tmp_path / "out")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    description = json.loads(Path(f"{engine}.json").read_text())
    batch, info = preprocess(photos["astronaut.png"], parse(InputSpec, description["input"]))
    assert info["input_hw"] == [96, 128]  # 512x512, clamped to the range 32..96 x 32..128
    python = python_openvino_outputs(engine, batch)
    with OnnxRuntimeRunner(Description.read(artifact / "vitdeploy.json"), artifact / "model.onnx") as runner:
        onnx_runtime = runner.infer({"image": batch})
    stats = {entry["name"]: entry for entry in json.loads((tmp_path / "out" / "stats.json").read_text())["levels"]}
    for output in description["outputs"]:
        name = output["name"]
        cpp = np.load(tmp_path / "out" / f"{name}.npy")
        assert cpp.shape == python[name].shape == (1, 256, 96 // output["stride"], 128 // output["stride"])
        assert np.abs(cpp - python[name]).max() <= OPENVINO_MAX_ABS, name
        assert np.abs(cpp - onnx_runtime[name]).max() <= description["tolerance"]["fp32"]["max_abs"], name
        assert f"{name} " in result.stdout and stats[name]["stride"] == output["stride"]
        heatmap = tmp_path / "out" / f"{name}_heatmap.png"
        assert heatmap.is_file() == (output["kind"] == "feature") == (stats[name]["heatmap"] is not None), name
    assert [o["name"] for o in description["outputs"] if o["kind"] == "feature"] == ["stride4", "stride8", "stride16"]


@pytest.mark.skipif(not is_installed("sam2"), reason="the SAM2 decoder is exported with Meta's sam2 (vitdeploy[sam2])")
def test_demo_sam2_prompts_match_the_python_predictor(demo: Path, sam2_decoder_artifacts: dict[int, Path],
                                                      photos: dict[str, Path], tmp_path: Path) -> None:
    """--point/--box on a SAM2 artifact with its decoder (512): the encoder and decoder OpenVINO engines, masks at
    the photo's size that agree with vitdeploy.sam2.Predictor's on >= 99.9% of pixels (SAM2's antialiased
    resize is ported from Pillow), the same scores, PNG overlays; prompt mistakes are one line."""
    from vitdeploy.sam2 import Predictor

    artifact = tmp_path / "sam2"
    shutil.copytree(sam2_decoder_artifacts[512], artifact)
    engine = build_engine(artifact, "openvino", "fp32", progress=Progress(2, enabled=False)).path
    photo = photos["coffee.png"]  # 400x600
    cases = {"points": (["--point", "300,160", "--point", "200,300,0"],
                        {"point_coords": [[300, 160], [200, 300]], "point_labels": [1, 0]}),
             "box": (["--box", "150,100,450,380", "--single"], {"box": [150, 100, 450, 380], "multimask_output": False})}
    with Predictor(artifact, backend="openvino") as predictor:
        predictor.set_image(photo)
        for name, (flags, prompt) in cases.items():
            out = tmp_path / name
            result = subprocess.run([str(demo), str(engine), str(photo), *flags, "--out", str(out)],
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0 and result.stderr == "", result.stderr
            assert "decoder.openvino.fp32.xml (OpenVINO, f32)" in result.stdout
            masks, scores, low_res = predictor.predict(**prompt)
            cpp = np.load(out / "masks.npy")
            assert cpp.shape == masks.shape == (len(scores), 400, 600)
            assert float((cpp.astype(bool) == masks).mean()) >= 0.999, name
            assert np.abs(np.load(out / "scores.npy") - scores).max() <= 1e-3
            assert np.load(out / "low_res_masks.npy").shape == low_res.shape
            overlay = np.asarray(Image.open(out / "mask0.png"))
            assert overlay.shape == (400, 600, 3) and (overlay != np.asarray(Image.open(photo))).any()
    refused = {("--point", "700,10"): "prompt point (700, 10) is outside the image (600x400): expected 0 <= x <= 600 "
                                      "and 0 <= y <= 400",
               ("--point", "5"): "--point '5': expected X,Y or X,Y,LABEL (LABEL 1 foreground, 0 background)",
               ("--box", "50,5,10,100"): "--box '50,5,10,100': expected X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1"}
    for flags, message in refused.items():
        result = subprocess.run([str(demo), str(engine), str(photo), *flags], capture_output=True, text=True,
                                timeout=300)
        assert (result.returncode, result.stderr) == (1, f"vitdeploy_demo: error: {message}\n")


def test_demo_openvino_bf16_matches_python(demo: Path, openvino_engine, photos: dict[str, Path],
                                           tmp_path: Path) -> None:
    """bf16 inference precision: the same as Python's OpenVINO at bf16, and within the recipe's bf16 tolerance."""
    engine = openvino_engine("vit-dynamic", "bf16")
    result = run_demo(demo, engine, photos["coffee_small.png"], tmp_path)
    assert result.returncode == 0, result.stderr
    description = json.loads(Path(f"{engine}.json").read_text())
    batch, _ = preprocess(photos["coffee_small.png"], parse(InputSpec, description["input"]))
    python, eager = python_openvino_outputs(engine, batch), eager_outputs(engine.parent, batch)
    for output in description["outputs"]:
        cpp = np.load(tmp_path / f"{output['name']}.npy")
        assert np.abs(cpp - python[output["name"]]).max() <= OPENVINO_MAX_ABS
        assert np.abs(cpp - eager[output["name"]]).max() <= description["tolerance"]["bf16"]["max_abs"]


def edited_description(engine: Path, edit) -> None:
    description = json.loads(Path(f"{engine}.json").read_text())
    edit(description)
    Path(f"{engine}.json").write_text(json.dumps(description))


def test_demo_load_errors_are_exact(demo: Path, openvino_engine, photos: dict[str, Path], tmp_path: Path) -> None:
    """Every load-time check fails before inference with one exact line and exit status 1."""
    source = openvino_engine("vit-dynamic")
    xml, binary = source.name, source.with_suffix(".bin").name
    size = source.with_suffix(".bin").stat().st_size
    compiled_in = compiled_runtimes(demo)
    (tmp_path / "text.png").write_text("not an image")

    def truncate(engine: Path) -> None:
        with open(engine.with_suffix(".bin"), "r+b") as handle:
            handle.truncate(size - 1)

    def corrupt(engine: Path) -> None:
        with open(engine.with_suffix(".bin"), "r+b") as handle:
            handle.seek(size // 2)
            byte = handle.read(1)
            handle.seek(size // 2)
            handle.write(bytes([byte[0] ^ 0xFF]))

    def rename(engine: Path) -> Path:
        renamed = engine.with_name("renamed.xml")
        engine.rename(renamed)
        Path(f"{engine}.json").rename(f"{renamed}.json")
        return renamed

    def narrow_profile(description: dict) -> None:
        description["engine"]["profile"]["image"]["max"] = [1, 3, 64, 64]

    def rename_output(description: dict) -> None:
        description["outputs"][1]["name"] = "pooled"
        description["engine"]["io"]["pooled"] = description["engine"]["io"].pop("block1")

    cases = {  # name: (what is done to a fresh copy of the engine, image, the error after "vitdeploy_demo: error: ")
        "truncated": (truncate, "chelsea.png",
                      f"{binary} is {size - 1} bytes, truncated: expected {size} bytes (interrupted copy?); copy it "
                      "again or rebuild"),
        "corrupt": (corrupt, "chelsea.png",
                    f"{binary} is corrupt: its sha256 differs from the one recorded at build time (same size, changed "
                    "bytes); copy it again or rebuild"),
        "missing file": (lambda engine: engine.with_suffix(".bin").unlink(), "chelsea.png",
                         "{dir}/" + binary + " does not exist: {dir}/" + xml + ".json lists it as part of the engine; "
                         "copy it beside the engine or rebuild with `vitdeploy build`"),
        "missing description": (lambda engine: Path(f"{engine}.json").unlink(), "chelsea.png",
                                "engine description {dir}/" + xml + ".json does not exist: expected it beside the "
                                "engine, as `vitdeploy build` writes it"),
        "format version 1": (lambda engine: edited_description(engine, lambda d: d.update(format_version=1)),
                             "chelsea.png", "{dir}/" + xml + ".json is format_version 1: this demo reads version 2; "
                             "re-export the artifact (and rebuild its engines) with a current vitdeploy"),
        "runtime older than the engine": (
            lambda engine: edited_description(engine, lambda d: d["engine"].update(backend_version="2999.0.0")),
            "chelsea.png", "the engine was built with OpenVINO 2999.0.0 but this vitdeploy_demo runs OpenVINO "
            f"{compiled_in['openvino']}: expected 2999.0.0 or newer; rebuild the engine with this OpenVINO or the "
            "demo against a newer one"),
        "unreadable image": (lambda engine: None, "text.png",
                             "{tmp}/text.png is neither PNG nor JPEG: expected a PNG or JPEG file"),
        "missing image": (lambda engine: None, "nothing.jpg",
                          "image {tmp}/nothing.jpg does not exist: expected a PNG or JPEG file"),
        "out of profile": (lambda engine: edited_description(engine, narrow_profile), "chelsea.png",
                           "input 1x3x128x96 for image {photo} is outside the engine's profile 1x3x32x32..1x3x64x64"),
        "renamed engine": (rename, "chelsea.png",
                           f"engine renamed.xml is described as {xml} in {{dir}}/renamed.xml.json: expected the names "
                           "`vitdeploy build` gave them (the files are found by name)"),
        "other io": (lambda engine: edited_description(engine, rename_output), "chelsea.png",
                     f"{xml} has inputs [image] and outputs [block0, block1]: expected inputs [image] and outputs "
                     "[block0, pooled] as {dir}/" + xml + ".json says; the engine and its description do not belong "
                     "together"),
    }
    if "tensorrt_rtx" not in compiled_in:
        cases["backend not compiled in"] = (
            lambda engine: edited_description(engine, lambda d: d["engine"].update(backend="tensorrt_rtx")),
            "chelsea.png", f"the engine is a tensorrt_rtx engine but this vitdeploy_demo was built with "
            f"{', '.join(compiled_in)} only: rebuild the demo with tensorrt_rtx (-DTENSORRT_ROOT=...)")
    for name, (damage, image, message) in cases.items():
        directory = tmp_path / name.replace(" ", "_")
        shutil.copytree(source.parent, directory)
        engine = damage(directory / xml) or directory / xml  # a damage that renames the engine returns its new path
        photo = photos.get(image, tmp_path / image)
        result = run_demo(demo, engine, photo, directory / "out")
        expected = message.format(dir=directory, tmp=tmp_path, photo=photo)
        assert (result.returncode, result.stderr) == (1, f"vitdeploy_demo: error: {expected}\n"), name
        assert not (directory / "out").exists(), f"{name}: the demo wrote output before failing"


@pytest.mark.gpu
@pytest.mark.skipif(compute_capability() is None or not (is_installed("tensorrt") or is_installed("tensorrt_rtx")),
                    reason="needs a CUDA GPU and tensorrt or tensorrt_rtx to build its engine (checked before the "
                           "demo is built)")
@pytest.mark.parametrize("baked", [False, True], ids=["float32", "baked"])
def test_demo_matches_python_tensorrt_runner(build_dir: Path, images: dict[str, Path], tmp_path: Path,
                                             baked: bool) -> None:
    """vitdeploy_demo's input and outputs equal Python preprocessing + TensorRTRunner on the same engine
    (a plain engine, and one taking uint8 NHWC pixels)."""
    demo = build_dir / "vitdeploy_demo"
    versions = compiled_runtimes(demo)
    compiled = [name for name in ("tensorrt", "tensorrt_rtx") if name in versions]
    if not compiled:
        pytest.skip("vitdeploy_demo has no TensorRT runtime: CMake found no TensorRT/TensorRT-RTX (set TENSORRT_ROOT) "
                    "or CUDA")
    backend, version = compiled[0], versions[compiled[0]]
    if not is_installed(backend):
        pytest.skip(f"the Python module {backend} is not installed, so no engine for the demo can be built")
    if use_backend(backend).__version__.split(".")[:3] != version.split("."):
        pytest.skip(f"vitdeploy_demo links {backend} {version} but Python has {use_backend(backend).__version__}: "
                    "an engine only loads on the version that built it")

    artifact = export_artifact(load_recipe("vit_small"), tmp_path / "vit_small",
                               ExportOptions(size=(64, 96), bake_preprocessing=baked))
    engine = build_engine(artifact, backend=backend, precision="fp32").path
    result = subprocess.run([str(demo), str(engine), str(images["png"]), "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    description = json.loads(Path(f"{engine}.json").read_text())
    tensor, _ = preprocess(images["png"], parse(InputSpec, description["input"]))
    demo_input = np.load(tmp_path / "demo" / "input.npy")
    assert demo_input.dtype == tensor.dtype and demo_input.shape == tensor.shape
    assert np.abs(demo_input.astype(np.float64) - tensor).max() <= PREPROCESS_MAX_ABS  # exact for uint8
    with TensorRTRunner(Engine.at(engine)) as runner:
        expected = runner.infer({"image": tensor})
    for output in description["outputs"]:
        got = np.load(tmp_path / "demo" / f"{output['name']}.npy")
        want = expected[output["name"]]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), output["name"]
        if output["kind"] == "feature":
            assert (tmp_path / "demo" / f"{output['name']}_heatmap.png").is_file()


def test_demo_aoti_matches_python_and_eager(build_dir: Path, aoti_engine: Path, photos: dict[str, Path],
                                            tmp_path: Path) -> None:
    """The demo's libtorch runtime on a real AOTInductor package, against vitdeploy.load and eager PyTorch."""
    program = build_dir / "vitdeploy_demo"
    if "aoti" not in compiled_runtimes(program):
        pytest.skip("CMake found no torch for the AOTInductor runtime")
    result = run_demo(program, aoti_engine, photos["chelsea.png"], tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    batch = np.load(tmp_path / "input.npy")
    with vitdeploy.load(aoti_engine.parent, backend="aoti") as model:
        python = model.infer(batch)
    eager = eager_outputs(aoti_engine.parent, batch)
    for name in python:
        cpp = np.load(tmp_path / f"{name}.npy")
        assert cpp.shape == python[name].shape == eager[name].shape
        assert np.abs(cpp - python[name]).max() <= 1e-5 and np.abs(cpp - eager[name]).max() <= 1e-4, name
