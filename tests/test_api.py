"""vitdeploy.load(...).infer(...) on ONNX Runtime (CPU) with a real vit_small export (64x64, + embedding)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitdeploy.api as api
from vitdeploy.artifact import load_artifact
from vitdeploy.engine import Engine, find_engines
from vitdeploy.errors import VitdeployError, VitdeployWarning
from vitdeploy.preprocess import preprocess
from vitdeploy.runners import RUNTIMES


@pytest.fixture(scope="module")
def model(vit_small_artifact: Path):
    with api.load(vit_small_artifact, backend="onnxruntime_cpu") as loaded:
        yield loaded


def _images(count: int, hw: tuple[int, int] = (80, 100)) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(count)]


def test_outputs_follow_the_artifact_description(model, vit_small_artifact: Path):
    description = load_artifact(vit_small_artifact).outputs
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    pyramid = model.infer(batch)
    assert list(pyramid) == [o.name for o in description] == ["block2", "block5", "block8", "block11",
                                                                  "embedding"]
    assert [(lv.name, lv.kind, lv.channels, lv.stride, lv.index) for lv in pyramid.levels] == \
        [(o.name, o.kind, o.channels, o.stride, o.index) for o in description]
    for level in pyramid.levels:
        expected = [2, level.channels, 64 // level.stride, 64 // level.stride] if level.kind == "feature" \
            else [2, level.channels]
        assert list(pyramid[level.name].shape) == expected and pyramid[level.name].dtype == np.float32
    assert not np.allclose(pyramid["block2"], pyramid["block11"])  # really different levels
    # Each sample is computed independently of its batch mates.
    single = model.infer(batch[1:])
    for name in pyramid:
        np.testing.assert_allclose(single[name][0], pyramid[name][1], atol=1e-5)


def test_uint8_images_paths_and_lists_are_preprocessed(model, tmp_path: Path):
    images = _images(3)
    expected = model.infer(np.concatenate([preprocess(image, model.input)[0] for image in images]))
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(image).save(paths[-1])
    for given in (images, np.stack(images), paths, [str(p) for p in paths]):
        got = model.infer(given)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
    one = model.infer(paths[0])
    assert one["embedding"].shape == (1, 384)
    np.testing.assert_array_equal(one["embedding"][0], expected["embedding"][0])
    np.testing.assert_array_equal(model.infer(images[0])["block2"][0], expected["block2"][0])


@pytest.mark.parametrize(("given", "message"), [
    (np.zeros((1, 3, 64, 64), np.float64),
     "input 'image' has dtype float64: expected float32 (normalised pixels; see vitdeploy.preprocess)"),
    (np.zeros((1, 3, 48, 64), np.float32),
     "input 'image': size 48x64 differs from the artifact's fixed size 64x64"),
    (np.zeros((1, 64, 64, 3), np.float32),
     "input 'image' has shape [1, 64, 64, 3]: expected NCHW [batch, 3, height, width] (looks like NHWC: "
     "transpose to NCHW)"),
    (np.zeros((33, 3, 64, 64), np.float32), "input 'image': batch 33 is outside the artifact's batch range 1..32"),
    (np.zeros((64, 64), np.uint8), "image array has dtype uint8 and shape [64, 64]: expected uint8 "
                                   "[height, width, 3] RGB"),
    ([], "no images given: expected an image, a list of images or a float32 NCHW batch"),
    ("missing.png", "image missing.png does not exist: expected a PNG or JPEG file"),
])
def test_bad_inputs_are_rejected_before_the_runtime(model, given, message: str):
    with pytest.raises(VitdeployError) as caught:
        model.infer(given)
    assert str(caught.value) == message


def test_raw_pixels_given_as_float_are_caught(model):
    with pytest.raises(VitdeployError, match=r"^input 'image' channel 0 spans 0\.\.255: expected normalised "
                                             r"pixels.*\(raw 0\.\.255 pixels\? use vitdeploy\.preprocess\)$"):
        model.infer(np.full((1, 3, 64, 64), 255.0, np.float32) * np.linspace(0, 1, 64, dtype=np.float32))


def test_unavailable_backend_lists_the_available_ones(vit_small_artifact: Path):
    with pytest.raises(VitdeployError) as caught:
        api.load(vit_small_artifact, backend="tensorrt")
    message = str(caught.value)
    assert message.startswith("backend 'tensorrt' is not available for vit_small (tensorrt: no fp32 or fp16 tensorrt "
                              "engine in "
                              "the artifact (make one with `vitdeploy build --backend tensorrt --precision fp32`)): "
                              "available: ")
    assert "onnxruntime_cpu" in message.rsplit("available: ", 1)[1] and "\n" not in message
    with pytest.raises(VitdeployError, match=r"^unknown runtime backend 'onnx': expected one of auto, onnxruntime, "
                                             r"aoti, tensorrt, tensorrt_rtx, onnxruntime_cuda, aoti_cuda, openvino, "
                                             r"aoti_cpu, onnxruntime_cpu$"):
        api.load(vit_small_artifact, backend="onnx")


def test_a_renamed_backend_spelling_still_loads_with_a_warning(vit_small_artifact: Path):
    with pytest.warns(VitdeployWarning, match=r"^backend 'onnxruntime-cpu' is deprecated: use 'onnxruntime_cpu'$"):
        model = api.load(vit_small_artifact, backend="onnxruntime-cpu")
    with model:
        assert model.backend == "onnxruntime_cpu"


def test_auto_skips_an_engine_that_cannot_load(vit_small_artifact: Path, tmp_path: Path):
    """A damaged engine description is reported by name and 'auto' falls back to ONNX Runtime."""
    copy = tmp_path / "vit_small"
    copy.mkdir()
    shutil.copy(vit_small_artifact / "vitdeploy.json", copy)
    os.link(vit_small_artifact / "model.onnx", copy / "model.onnx")  # a symlink out of the artifact is refused
    (copy / "model.tensorrt_rtx.fp16.engine").write_bytes(b"\0" * 16)
    (copy / "model.tensorrt_rtx.fp16.engine.json").write_text("{")
    with pytest.raises(VitdeployError, match=r"^backend 'tensorrt_rtx' is not available for vit_small \(tensorrt_rtx: "
                                             r"model\.tensorrt_rtx\.fp16\.engine: .*model\.tensorrt_rtx\.fp16\."
                                             r"engine\.json is not valid JSON"):
        api.load(copy, backend="tensorrt_rtx")
    with api.load(copy) as model:
        assert model.backend in ("onnxruntime_cuda", "onnxruntime_cpu") and model.engine is None
        assert set(model.infer(_images(1)[0])) == {"block2", "block5", "block8", "block11", "embedding"}


def test_engine_preference_and_precision_filter(vit_small_artifact: Path, tmp_path: Path):
    for name in ("model.tensorrt_rtx.fp16.engine", "model.tensorrt.fp32.engine", "model.tensorrt_rtx.fp32.engine",
                 "model.tensorrt.bf16.engine"):
        (tmp_path / name).write_bytes(b"")
        (tmp_path / f"{name}.json").write_text("{}")
    (tmp_path / "model.tensorrt.fp16.engine").write_bytes(b"")  # no description: never considered
    artifact = load_artifact(vit_small_artifact)
    artifact = replace(artifact, directory=tmp_path)
    assert [p.name for p in RUNTIMES["tensorrt"].engines(artifact)] == ["model.tensorrt.fp32.engine"]
    assert [p.name for p in RUNTIMES["tensorrt_rtx"].engines(artifact)] == [
        "model.tensorrt_rtx.fp32.engine", "model.tensorrt_rtx.fp16.engine"]
    # bf16 changes the numbers: only when asked for
    assert [p.name for p in RUNTIMES["tensorrt"].engines(artifact, "bf16")] == ["model.tensorrt.bf16.engine"]
    assert [p.name for p in RUNTIMES["tensorrt_rtx"].engines(artifact, "fp16")] == ["model.tensorrt_rtx.fp16.engine"]
    (tmp_path / "model.tensorrt.fp32.old.engine").write_bytes(b"")
    (tmp_path / "model.tensorrt.fp32.old.engine.json").write_text("{}")  # not an engine's name: not found, refused
    assert [(e.backend, e.precision) for e in find_engines(tmp_path)] == [
        ("tensorrt", "bf16"), ("tensorrt", "fp32"), ("tensorrt_rtx", "fp16"), ("tensorrt_rtx", "fp32")]
    with pytest.raises(VitdeployError) as error:
        Engine.at(tmp_path / "model.tensorrt.fp32.old.engine")
    assert str(error.value) == ("model.tensorrt.fp32.old.engine is not an engine's file name: expected "
                                "model.<backend>.<precision>.<ext> as `vitdeploy build` writes it")


def test_closed_model_says_so(vit_small_artifact: Path):
    model = api.load(vit_small_artifact, backend="onnxruntime")
    assert re.fullmatch(r"Model\(vit_small, backend=onnxruntime_(cpu|cuda), model\.onnx\)", repr(model))
    model.close()
    model.close()  # idempotent
    with pytest.raises(VitdeployError, match="^model is closed: load the artifact again$"):
        model.infer(_images(1)[0])
