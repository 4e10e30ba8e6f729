"""--bake-preprocessing: uint8 NHWC RGB in, normalisation in the graph, verified like any export.

Two real exports of the same 2-block dynamic ViT-Ti test recipe (random weights, seed 0), one
baked and one plain, so the baked graph can be checked against host preprocessing + the plain graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import RECIPES, export_for_test, onnx_dims

import vitdeploy.api as api
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.engine import build as build_engine, read_engine_description
from vitdeploy.inputs import check_feed
from vitdeploy.errors import VitdeployError
from vitdeploy.progress import Progress
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.verify import verify_onnx

RECIPE = str(RECIPES / "vit_tiny_dynamic.toml")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, vit_tiny_dynamic_artifact: Path) -> tuple[Path, Path]:
    """(baked, plain): the plain export is the session's vit_tiny_dynamic artifact."""
    return export_for_test(RECIPE, tmp_path_factory.mktemp("bake") / "baked", bake_preprocessing=True), \
        vit_tiny_dynamic_artifact


def test_graph_takes_uint8_nhwc_and_says_so(exports):
    baked, _ = exports
    model = onnx.load(str(baked / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert onnx_dims(model) == {"image": ["batch", "height", "width", 3],
                                "block0": ["batch", 192, "height/16", "width/16"],
                                "block1": ["batch", 192, "height/16", "width/16"]}
    spec = load_artifact(baked).input
    assert (spec.layout, spec.dtype, spec.normalised_in_graph) == ("NHWC", "uint8", True)
    assert load_artifact(exports[1]).input.normalised_in_graph is False


def test_verify_compares_against_host_normalisation_at_every_size(exports):
    report = verify_onnx(load_artifact(exports[0]), batch_sizes=[1, 2])
    assert report.passed and len(report.checks) == 5 * 2 * 2  # 5 sizes x 2 batches x 2 outputs
    assert {tuple(c.input_shape[1:]) for c in report.checks} == {
        (64, 64, 3), (32, 32, 3), (128, 96, 3), (32, 96, 3), (128, 32, 3)}
    assert max(c.max_abs for c in report.checks) < 1e-4


def test_baked_graph_equals_host_preprocessing_plus_plain_graph(exports):
    baked, plain = exports
    images = list(np.random.default_rng(3).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8))
    with api.load(baked, backend="onnxruntime_cpu") as with_pixels, \
            api.load(plain, backend="onnxruntime_cpu") as with_floats:
        batch = with_pixels.batch(images)
        assert batch.dtype == np.uint8 and batch.shape == (2, 48, 80, 3)
        np.testing.assert_array_equal(batch, np.stack(images))  # a valid size is not resized
        got, expected = with_pixels.infer(images), with_floats.infer(images)
        assert list(got) == list(expected) == ["block0", "block1"]
        for name in got:
            np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
        resized = with_pixels.batch(np.zeros((50, 70, 3), np.uint8))  # rounds to the size rule: 48x64
        assert resized.dtype == np.uint8 and resized.shape == (1, 48, 64, 3)


@pytest.mark.parametrize("batch, message", [
    (np.zeros((1, 3, 64, 64), np.float32),
     "input 'image' has dtype float32: expected uint8 (raw RGB pixels 0..255: the artifact normalises them itself)"),
    (np.zeros((1, 3, 64, 64), np.uint8),
     "input 'image' has shape [1, 3, 64, 64]: expected NHWC [batch, height, width, 3] "
     "(looks like NCHW: transpose to NHWC)"),
    (np.zeros((1, 64, 40, 3), np.uint8),
     "input 'image': size 64x40 is not a multiple of 16 (the backbone's size rule)"),
])
def test_wrong_feeds_say_what_the_baked_graph_takes(exports, batch: np.ndarray, message: str):
    artifact = load_artifact(exports[0])
    with OnnxRuntimeRunner(artifact.description, artifact.onnx_path) as runner:
        with pytest.raises(VitdeployError) as error:
            runner.infer({"image": batch})
    assert str(error.value) == message


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_rtx_builds_the_uint8_input(exports, precision: str):
    pytest.importorskip("tensorrt_rtx")
    engine = build_engine(exports[0], "tensorrt_rtx", precision, progress=Progress(3, enabled=False)).path
    description = json.loads(engine.with_name(engine.name + ".json").read_text())
    described = description["engine"]
    assert described["io"]["image"] == {"mode": "input", "dtype": "uint8", "shape": [-1, -1, -1, 3]}
    assert described["profile"]["image"] == {"min": [1, 32, 32, 3], "opt": [1, 64, 64, 3],
                                             "max": [4, 128, 96, 3]}
    description = read_engine_description(engine)
    with pytest.raises(VitdeployError) as error:  # checked before any GPU is needed
        check_feed(description.input, {"image": np.zeros((1, 160, 32, 3), np.uint8)}, description.engine.profile)
    assert str(error.value).splitlines()[0] == ("input 'image' has shape [1, 160, 32, 3], outside the engine "
                                                "profile (height 160 is not in 32..128):")


def test_cli_export_prints_the_uint8_nhwc_input(tmp_path: Path):
    result = CliRunner().invoke(main, ["export", RECIPE, "--bake-preprocessing", "--fixed", "-o",
                                       str(tmp_path / "fixed")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3] == ("input  image: [B, H, W, 3] uint8 (RGB pixels, normalised in the "
                                              "graph), H x W = 64x64, batch 1..4")
