"""The simple feature pyramid: strides and names in the graph and metadata, the resampling it promises,
parity across a dynamic range, TensorRT-RTX acceptance, and the mistakes it refuses."""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import RECIPES, description_json, export_for_test, onnx_dims, requires
from vitdeploy.artifact import load_artifact
from vitdeploy import families
from vitdeploy.cli import main
from vitdeploy.engine import build as build_engine
from vitdeploy.errors import VitdeployError
from vitdeploy.models import describe_recipe_pyramid
from vitdeploy.progress import Progress
from vitdeploy.description import PyramidSpec
from vitdeploy.recipes import available_recipes, load_recipe, load_recipe_file
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.verify import verify_onnx

SFP = str(RECIPES / "vit_tiny_sfp.toml")


def test_outputs_are_named_by_stride_with_symbolic_shapes(vit_tiny_sfp_artifact: Path):
    model = onnx.load(str(vit_tiny_sfp_artifact / "model.onnx"))
    assert onnx_dims(model) == {"image": ["batch", 3, "height", "width"],
                            **{f"stride{s}": ["batch", 192, f"height/{s}", f"width/{s}"] for s in (4, 8, 16, 32)},
                            "embedding": ["batch", 192]}
    meta = json.loads((vit_tiny_sfp_artifact / "vitdeploy.json").read_text())
    assert [(o["name"], o["index"], o["stride"]) for o in meta["outputs"]] == [
        ("stride4", 0, 4), ("stride8", 1, 8), ("stride16", 2, 16), ("stride32", 3, 32), ("embedding", None, None)]
    assert meta["pyramid"]["source_stride"] == 16 and meta["pyramid"]["strides"] == [4, 8, 16, 32]
    assert meta["input"]["size_multiple"] == 32  # pooling 16 -> 32 needs an even patch grid


def test_resampling_is_bilinear_half_pixel_and_max_pool(vit_tiny_sfp_artifact: Path):
    """The ops TensorRT must accept: linear Resize without antialias, and MaxPool 2x2."""
    nodes = onnx.load(str(vit_tiny_sfp_artifact / "model.onnx")).graph.node
    resize = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes if n.op_type == "Resize"]
    pool = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes if n.op_type == "MaxPool"]
    assert len(resize) == 2 and all(r["mode"] == b"linear" and r["antialias"] == 0
                                    and r["coordinate_transformation_mode"] == b"half_pixel" for r in resize)
    assert len(pool) == 1 and pool[0]["kernel_shape"] == [2, 2] and pool[0]["strides"] == [2, 2]


def test_parity_across_the_dynamic_range(vit_tiny_sfp_artifact: Path):
    report = verify_onnx(load_artifact(vit_tiny_sfp_artifact), batch_sizes=[1, 2])
    assert {tuple(c.input_shape[2:]) for c in report.checks} == {(64, 64), (32, 32), (128, 96), (32, 96), (128, 32)}
    assert report.passed and max(c.max_abs for c in report.checks) < 1e-4
    shapes = {c.output: c.shape for c in report.checks if c.input_shape == [2, 3, 128, 96]}
    assert shapes == {"stride4": [2, 192, 32, 24], "stride8": [2, 192, 16, 12], "stride16": [2, 192, 8, 6],
                      "stride32": [2, 192, 4, 3], "embedding": [2, 192]}


@requires("tensorrt_rtx")
def test_tensorrt_rtx_builds_the_dynamic_pyramid(vit_tiny_sfp_artifact: Path):
    engine = build_engine(vit_tiny_sfp_artifact, "tensorrt_rtx", "fp32", progress=Progress(3, enabled=False)).path
    io = description_json(engine)["engine"]["io"]
    assert {name: t["shape"] for name, t in io.items()} == {
        "image": [-1, 3, -1, -1], "stride4": [-1, 192, -1, -1], "stride8": [-1, 192, -1, -1],
        "stride16": [-1, 192, -1, -1], "stride32": [-1, 192, -1, -1], "embedding": [-1, 192]}
    assert engine.stat().st_size > (vit_tiny_sfp_artifact / "model.onnx").stat().st_size * 0.9  # weights inside
    engine.unlink()
    engine.with_name(engine.name + ".json").unlink()


def test_one_block_feeds_every_stride(tmp_path: Path):
    """ViTDet's own layout: the last block alone, upsampled and pooled; checked against torch's ops directly."""
    artifact = load_artifact(export_for_test(SFP, tmp_path / "last", outputs=(3,), embedding=False, dynamic=False))
    assert [(o.name, o.index) for o in artifact.outputs] == [
        ("stride4", 3), ("stride8", 3), ("stride16", 3), ("stride32", 3)]
    image = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(artifact.description, artifact.onnx_path) as runner:
        out = runner.infer(OrderedDict(image=image))
    base = torch.from_numpy(out["stride16"])
    assert base.shape == (2, 192, 4, 4)
    for name, expected in (("stride4", F.interpolate(base, scale_factor=4, mode="bilinear", align_corners=False)),
                           ("stride8", F.interpolate(base, scale_factor=2, mode="bilinear", align_corners=False)),
                           ("stride32", F.max_pool2d(base, 2))):
        np.testing.assert_allclose(out[name], expected.numpy(), atol=1e-5, rtol=0)
    assert verify_onnx(artifact, batch_sizes=[1]).passed


def test_list_describes_the_shipped_pyramid_recipe():
    recipe = load_recipe("vit_base_sfp")
    outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                      recipe.pyramid, family=families.get(recipe.family))
    assert [(o.name, o.index, o.channels, o.stride) for o in outputs] == [
        ("stride4", 2, 768, 4), ("stride8", 5, 768, 8), ("stride16", 8, 768, 16), ("stride32", 11, 768, 32)]


@pytest.mark.parametrize("family, timm_name, outputs, strides, message", [
    ("convnext", "convnext_tiny", None, (4, 8, 16, 32),
     r"pyramid 'simple' for convnext_tiny: its outputs already have strides \[4, 8, 16, 32\]; expected a single-scale"),
    ("vit", "vit_tiny_patch16_224", (2, 5, 8), (4, 8, 16, 32),
     r"pyramid strides \[4, 8, 16, 32\] for vit_tiny_patch16_224 got 3 feature outputs \[2, 5, 8\]: expected 4"),
    ("vit", "vit_small_patch14_reg4_dinov2", None, (4, 8, 16, 32),
     r"pyramid stride 4 for vit_small_patch14_reg4_dinov2: expected a divisor or multiple of its feature stride 14"),
])
def test_impossible_pyramids_are_refused(family, timm_name, outputs, strides, message):
    with pytest.raises(VitdeployError, match=message):
        describe_recipe_pyramid(timm_name, {}, outputs, False, PyramidSpec("simple", strides),
                                family=families.get(family))


@pytest.mark.parametrize("table, message", [
    ('kind = "fpn"\nstrides = [8, 16]', r"pyramid\.kind: expected one of simple, got 'fpn'"),
    ('kind = "simple"\nstrides = [16, 8]', r"pyramid\.strides: expected distinct strides in increasing order"),
    ('kind = "simple"\nstrides = [8, 16]\nmode = "nearest"', r"pyramid\.mode: unknown key"),
])
def test_bad_pyramid_tables_are_rejected(tmp_path: Path, table: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(f'timm_name = "vit_tiny_patch16_224"\nfamily = "vit"\n[input]\nsize = [64, 64]\n[pyramid]\n{table}\n')
    with pytest.raises(VitdeployError, match=message):
        load_recipe_file(path)


def test_cli_pyramid_option_on_a_recipe_without_one(tmp_path: Path):
    """`--pyramid simple` gives any single-scale recipe the pyramid; one block feeds every stride."""
    out = tmp_path / "sfp"
    result = CliRunner().invoke(main, ["export", str(RECIPES / "vit_tiny_dynamic.toml"), "--fixed", "--outputs", "1",
                                       "--pyramid", "simple", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-4:] == ["output stride4: [B, 192, H/4, W/4]", "output stride8: [B, 192, H/8, W/8]",
                                               "output stride16: [B, 192, H/16, W/16]",
                                               "output stride32: [B, 192, H/32, W/32]"]
    assert json.loads((out / "vitdeploy.json").read_text())["pyramid"]["strides"] == [4, 8, 16, 32]
    assert verify_onnx(load_artifact(out), batch_sizes=[1]).passed


def test_cli_pyramid_none_drops_the_recipes_pyramid_and_errors_are_one_line(tmp_path: Path):
    result = CliRunner().invoke(main, ["export", SFP, "--fixed", "--pyramid", "none", "-o", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()[2:]] == [
        "output block0", "output block1", "output block2", "output block3", "output embedding"]
    for args, message in [(["--pyramid-strides", "8,16"], "--pyramid-strides given without --pyramid: expected "
                                                           "--pyramid simple"),
                          (["--pyramid", "simple", "--pyramid-strides", "16,8"],
                           "--pyramid-strides 16,8: expected distinct positive strides in increasing order")]:
        result = CliRunner().invoke(main, ["export", SFP, *args, "-o", str(tmp_path / "x")])
        assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


@pytest.mark.parametrize("name", [n for n in available_recipes() if load_recipe(n).family in ("vit", "eva", "beit",
                                                                                              "samvit")])
def test_every_single_scale_recipe_takes_the_simple_pyramid(name: str):
    recipe = load_recipe(name)
    outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                      PyramidSpec(kind="simple", strides=()),
                                      family=families.get(recipe.family))
    patch = 14 if "patch14" in recipe.timm_name else 16
    expected = (7, 14, 28, 56) if patch == 14 else (4, 8, 16, 32)
    assert [(o.name, o.stride) for o in outputs if o.kind == "feature"] == [(f"stride{s}", s) for s in expected]
