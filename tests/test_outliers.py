"""Outlier fixtures (trained-ViT activation structure on seeded weights): int8 smoothing and fp16/bf16 range checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import RECIPES, description_json, export_for_test, requires
from vitdeploy import families
from vitdeploy.cli import main
from vitdeploy.engine import Engine, build
from vitdeploy.engine.precision import reduced_precision_onnx
from vitdeploy.errors import VitdeployError
from vitdeploy.fixtures.outliers import write_fixture
from vitdeploy.models import Weights, create_model
from vitdeploy.recipes import load_recipe
from vitdeploy.engine.smoothing import check_function
from vitdeploy.verify import verify_engine

pytest.importorskip("skimage.data", reason="scikit-image (test extra) ships the photos")
VIT = str(RECIPES / "vit_tiny_dynamic.toml")
HIERA = str(RECIPES / "hiera_abswin_dynamic.toml")
INT8 = "model.onnxruntime.int8.onnx"


def _fixture_artifact(root: Path, recipe: str, kind: str, **options) -> Path:
    checkpoint = root / f"{kind}.safetensors"
    write_fixture(recipe, kind, checkpoint, **options)
    return export_for_test(recipe, root / kind, weights=Weights("checkpoint", 0, checkpoint), dynamic=False)


@pytest.fixture(scope="module")
def vit_channels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-block ViT-Ti with outlier LayerNorm channels (same function as seed 0), fixed 64x64."""
    return _fixture_artifact(tmp_path_factory.mktemp("vit"), VIT, "channels")


@pytest.fixture(scope="module")
def vit_massive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-block ViT-Ti whose block1 adds 1e5 to two residual channels (a bias beyond fp16's range)."""
    return _fixture_artifact(tmp_path_factory.mktemp("vit"), VIT, "massive", magnitude=1e5)


def _copy(artifact: Path, tmp_path: Path) -> Path:
    shutil.copytree(artifact, tmp_path / artifact.name)
    return tmp_path / artifact.name


def _quantize(artifact: Path, photos: Path, *options: str):
    return CliRunner().invoke(main, ["quantize", str(artifact), "--calibration", str(photos), "--samples", "6",
                                     "--held-out", "3", *options])


def test_the_outlier_channel_fixture_computes_the_same_function(tmp_path: Path):
    channels, massive = tmp_path / "channels.safetensors", tmp_path / "massive.safetensors"
    recipe = load_recipe(VIT)
    model, _ = create_model(recipe.timm_name, recipe.timm_kwargs, Weights("random", 0), recipe.input.size,
                            family=families.get(recipe.family))  # the plain checkpoint `vitdeploy export` makes
    assert write_fixture(VIT, "channels", channels) == ["blocks.0.norm1", "blocks.0.norm2"]
    assert write_fixture(VIT, "massive", massive) == ["blocks.1.mlp.fc2.bias"]
    before, after = model.state_dict(), load_file(str(channels))
    ratio = (after["blocks.0.norm1.weight"] / before["blocks.0.norm1.weight"]).numpy().round(3)
    assert sorted(ratio)[-4:] == [40.0] * 4 and (ratio == 1).sum() == ratio.size - 4
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_features(image)
        model.load_state_dict(after)
        assert torch.allclose(model.forward_features(image), expected, rtol=0, atol=1e-4 * expected.abs().max())
        model.load_state_dict(load_file(str(massive)))
        residual = []
        model.blocks[-1].register_forward_hook(lambda module, args, output: residual.append(output))
        model.forward_features(image)
    assert int((residual[0].abs() > 1e3).all(dim=1).sum()) == 2  # two channels at 1e3+ on every token


def test_smoothing_rescues_int8_on_outlier_channels(vit_channels: Path, photos: Path, tmp_path: Path):
    artifact = _copy(vit_channels, tmp_path)
    off = _quantize(artifact, photos, "--smooth", "off")
    assert off.exit_code == 1
    assert off.stderr.splitlines()[-1].startswith("Error: the int8 graph misses its accuracy gate")
    assert not (artifact / INT8).exists()
    result = _quantize(artifact, photos)  # --smooth auto
    assert result.exit_code == 0, result.output
    smoothing = description_json(artifact / INT8)["engine"]["quantization"]["smoothing"]
    assert smoothing["mode"] == "auto" and smoothing["alpha"] == 0.5 and smoothing["fp32_max_rel_l2"] <= 1e-4
    assert len(smoothing["smoothed"]) == 2  # block0's qkv and fc1 inputs, folded into their LayerNorms
    assert all(s["via"].startswith("node_layer_norm") and s["channel_ratio"] > 20 for s in smoothing["smoothed"])
    assert verify_engine(Engine.at(artifact / INT8)).passed
    pytest.importorskip("openvino")
    assert verify_engine(build(artifact, "openvino", "int8")).passed  # the same QDQ graph
    pytest.importorskip("tensorrt_rtx")
    assert description_json(build(artifact, "tensorrt_rtx", "int8").path)["engine"]["quantization"]["smoothing"][
        "smoothed"]


def test_an_alpha_smooths_every_input_through_layernorms_and_muls(vit_tiny_dynamic_artifact: Path, photos: Path,
                                                                  tmp_path: Path):
    artifact = _copy(vit_tiny_dynamic_artifact, tmp_path)
    path = build(artifact, "onnxruntime", "int8", calibration=photos, samples=6, held_out=3, smooth="0.6").path
    smoothing = description_json(path)["engine"]["quantization"]["smoothing"]
    assert smoothing["mode"] == "alpha" and smoothing["alpha"] == 0.6
    vias = [s["via"] for s in smoothing["smoothed"]]
    assert len(vias) == 2 * 4 and sum(v.endswith("_smoothquant_mul") for v in vias) == 2 * 2  # proj, fc2: explicit Mul
    graph = onnx.load(str(path)).graph
    assert sum(n.op_type == "Mul" and n.name.endswith("_smoothquant_mul") for n in graph.node) == 4


def test_hiera_outlier_channels_are_found_and_smoothed(tmp_path: Path, photos: Path):
    artifact = _fixture_artifact(tmp_path, HIERA, "channels")
    path = build(artifact, "onnxruntime", "int8", calibration=photos, samples=6, held_out=3).path
    quantization = description_json(path)["engine"]["quantization"]
    smoothed = quantization["smoothing"]["smoothed"]
    assert set(quantization["gates"]) and len(smoothed) == 4  # gated; blocks 0 and 2, norm1 and norm2
    assert all(s["channel_ratio"] > 20 for s in smoothed)


@pytest.mark.parametrize("options, expected", [
    (["--smooth", "1.5"], "--smooth 1.5: expected auto, off or an alpha between 0 and 1 (exclusive), e.g. 0.5"),
    (["--smooth", "0.5", "--dynamic"], "--smooth 0.5 with --dynamic: smoothing is measured on calibration photos, "
                                       "which dynamic int8 does not use; drop --smooth or quantize statically"),
    (["--samples", "2"], "smoothing estimates channel ranges from the calibration photos, and 2 are too few: "
                         "expected --samples 4 or more, or --smooth off"),
])
def test_smoothing_errors_are_one_line(vit_tiny_dynamic_artifact: Path, photos: Path, options: list[str],
                                       expected: str):
    result = CliRunner().invoke(main, ["quantize", str(vit_tiny_dynamic_artifact), "--calibration", str(photos),
                                       "--held-out", "3", *(["--samples", "6"] if "--samples" not in options else []),
                                       *options])
    assert result.exit_code == 1 and result.output == f"Error: {expected}\n"
    assert not (vit_tiny_dynamic_artifact / INT8).exists()


def test_a_smoothing_that_changes_the_function_is_refused(vit_channels: Path, vit_massive: Path):
    feed = {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)}
    assert check_function(vit_channels / "model.onnx", vit_channels / "model.onnx", [feed]) == 0.0
    with pytest.raises(VitdeployError, match=r"^smoothing changed the fp32 graph's output by a relative L2 error of "
                                             r".*: expected at most 1e-04; use a smaller --smooth alpha or "
                                             r"--smooth off"):
        check_function(vit_channels / "model.onnx", vit_massive / "model.onnx", [feed])


def test_fp16_verifies_on_the_cpu_with_range_checks(vit_massive: Path, vit_tiny_dynamic_artifact: Path):
    result = CliRunner().invoke(main, ["verify", str(vit_tiny_dynamic_artifact), "--precision", "fp16",
                                       "--batch-sizes", "1"])
    assert result.exit_code == 0 and "running the fp16 graph" in result.output and "kept fp32" not in result.output
    result = CliRunner().invoke(main, ["verify", str(vit_massive), "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    assert "kept fp32: node_linear_7 (Add): weight beyond fp16's range, max |value| 1e+05" in result.output
    report = json.loads((vit_massive / "verify_report.fp16.json").read_text())
    assert min(c["min_cosine"] for c in report["checks"]) >= 0.9999 and report["kept_fp32"]["nodes"]
    # without the range checks (no measured inputs, weights clamped to fp16 ...) the same graph fails
    half, kept = reduced_precision_onnx(vit_massive / "model.onnx", "fp16")
    assert [k["why"] for k in kept["nodes"]] == ["weight beyond fp16's range"]
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(vit_massive / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)}
    assert not np.isfinite(session.run(None, feed)[1]).all() and np.isfinite(reference.run(None, feed)[1]).all()


def test_a_graph_that_overflows_in_fp32_cannot_be_made_safe(vit_massive: Path, tmp_path: Path):
    model = onnx.load(str(vit_massive / "model.onnx"))
    bias = next(t for t in model.graph.initializer if t.name.endswith("blocks.1.mlp.fc2.bias"))
    with np.errstate(over="ignore"):  # 1e5 * 1e35: infinite in float32, as in a corrupt checkpoint
        infinite = onnx.numpy_helper.to_array(bias) * np.float32(1e35)
    bias.CopyFrom(onnx.numpy_helper.from_array(infinite, bias.name))
    onnx.save(model, str(tmp_path / "model.onnx"))
    feed = {"image": np.zeros((1, 3, 64, 64), np.float32)}
    with pytest.raises(VitdeployError, match=r"^the fp32 graph itself computes non-finite values at node_\w+ "
                                             r"\(\w+\) on seeded image-like inputs, so no fp16 or bf16 graph of it "
                                             r"can be made safe: check the checkpoint's weights"):
        reduced_precision_onnx(tmp_path / "model.onnx", "fp16", feeds=[feed])


def test_bf16_verifies_on_the_cpu(vit_massive: Path):
    result = CliRunner().invoke(main, ["verify", str(vit_massive), "--precision", "bf16", "--batch-sizes", "1"])
    assert result.exit_code == 0 and "running the bf16 graph" in result.output, result.output


@requires("tensorrt_rtx")
def test_tensorrt_rtx_builds_the_range_checked_fp16_graph(vit_massive: Path, tmp_path: Path):
    artifact = _copy(vit_massive, tmp_path)
    kept = description_json(build(artifact, "tensorrt_rtx", "fp16").path)["engine"]["kept_fp32"]
    assert kept["fp16_max"] == 65504.0 and kept["nodes"][0]["node"] == "node_linear_7"  # the bias Add, then its path
    assert {k["op"] for k in kept["nodes"][1:]} >= {"Add", "Reshape"}
