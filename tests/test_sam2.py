"""SAM2's image encoder (family sam2): the exported trunk + FPN neck against Meta's own encoder, its position
encodings at every size, SAM2 checkpoints, TensorRT-RTX builds, the Python runtime, and the one-line errors.

The artifact is tests/recipes/sam2_dynamic.toml (SAM2.1 tiny cut to 5 blocks and 48 channels, with a windowed
and a global block in stage 3), dynamic, from a SAM2-format checkpoint (conftest.sam2_state_dict). Parity
against Meta's `ImageEncoder` needs the `sam2` package (vitdeploy[sam2]); without it those tests skip with
the one-line error vitdeploy itself gives, and the rest still run.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from click.testing import CliRunner

import vitdeploy
from conftest import RECIPES, build_tensorrt_rtx_engine, export_for_test, onnx_dims, requires, sam2_state_dict
from vitdeploy import families
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.errors import VitdeployError
from vitdeploy.models import Weights, create_model, describe_recipe_pyramid
from vitdeploy.optional import missing
from vitdeploy.recipes import available_recipes, load_recipe
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.sam2.reference import meta_trunk_config
from vitdeploy.verify import verify_onnx

HAVE_SAM2 = importlib.util.find_spec("sam2") is not None
needs_sam2 = pytest.mark.skipif(not HAVE_SAM2, reason=str(missing("sam2")))
SAM2_RECIPES = {"sam2.1_hiera_tiny": "sam2.1_hiera_t", "sam2.1_hiera_small": "sam2.1_hiera_s",
                "sam2.1_hiera_base_plus": "sam2.1_hiera_b+", "sam2.1_hiera_large": "sam2.1_hiera_l"}
LEVELS = [("stride4", 4), ("stride8", 8), ("stride16", 16)]


def sam2_configs():
    """Hydra set up on sam2's config module, as `import sam2` does (a context, so tests do not leak it)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    return initialize_config_module("sam2", version_base="1.2")


def sine_encoding(height: int, width: int, channels: int = 256) -> np.ndarray:
    """DETR's normalised sine encoding, written out in NumPy: [channels, H, W], y channels then x channels;
    channel c of each half is sin (c even) or cos (c odd) of position / 10000 ** (2 * (c // 2) / half)."""
    half = channels // 2
    rate = 10000.0 ** (2 * (np.arange(half) // 2) / half)
    wave = np.where(np.arange(half) % 2 == 0, 0.0, np.pi / 2)  # cos(a) = sin(a + pi/2)

    def axis(n: int) -> np.ndarray:
        position = np.arange(1, n + 1) / (n + 1e-6) * 2 * np.pi
        return np.sin(position[:, None] / rate + wave)  # [n, half]

    y, x = axis(height), axis(width)
    return np.concatenate([np.broadcast_to(y.T[:, :, None], (half, height, width)),
                           np.broadcast_to(x.T[:, None, :], (half, height, width))]).astype(np.float32)


def test_sam2_artifact_describes_the_neck_levels(sam2_artifact: Path, sam2_checkpoint: Path):
    description = json.loads((sam2_artifact / "vitdeploy.json").read_text())
    assert [(o["name"], o["kind"], o["index"], o["channels"], o["stride"]) for o in description["outputs"]] == [
        ("stride4", "feature", 0, 256, 4), ("stride8", "feature", 1, 256, 8), ("stride16", "feature", 2, 256, 16),
        ("pos_stride4", "position", 0, 256, 4), ("pos_stride8", "position", 1, 256, 8),
        ("pos_stride16", "position", 2, 256, 16)]
    neck = description["neck"]
    assert (neck["kind"], neck["trunk_channels"], neck["d_model"], neck["fpn_top_down_levels"], neck["scalp"]) == \
        ("sam2_fpn", [48, 96, 192, 384], 256, [2, 3], 1)
    assert description["input"]["size_multiple"] == 32 and description["input"]["mode"] == "dynamic"
    weights = description["weights"]
    assert (weights["source"], weights["checkpoint"], weights["checkpoint_key"]) == \
        ("checkpoint", str(sam2_checkpoint), "model")
    assert weights["used_prefixes"] == ["image_encoder.trunk.", "image_encoder.neck."]
    assert weights["ignored_prefixes"] == {"maskmem_tpos_enc": 1, "memory_attention.": 2, "no_mem_embed": 1,
                                           "sam_mask_decoder.": 1, "sam_prompt_encoder.": 1}
    model = onnx.load(str(sam2_artifact / "model.onnx"))
    assert onnx_dims(model)["stride16"] == ["batch", 256, "height/16", "width/16"]
    assert onnx_dims(model)["pos_stride4"] == ["batch", 256, "height/4", "width/4"]
    assert not [n for n in model.graph.node if n.op_type == "Resize"]  # nearest upsampling is Expand + Reshape


def test_checkpoint_weights_are_loaded_not_seeded(sam2_artifact: Path, sam2_checkpoint: Path):
    """The exported encoder holds the checkpoint's tensors (SAM2's names mapped to timm's), not a seeded init."""
    recipe = load_recipe(str(RECIPES / "sam2_dynamic.toml"))
    encoder, _ = create_model(recipe.timm_name, recipe.timm_kwargs, Weights("checkpoint", checkpoint=sam2_checkpoint),
                              family=families.get("sam2"))
    state = torch.load(sam2_checkpoint, weights_only=True)["model"]
    assert torch.equal(encoder.trunk.blocks[3].mlp.fc2.weight, state["image_encoder.trunk.blocks.3.mlp.layers.1.weight"])
    assert torch.equal(encoder.neck.convs[0].conv.weight, state["image_encoder.neck.convs.0.conv.weight"])
    assert float(encoder.trunk.pos_embed.detach().std()) > 0.5  # the checkpoint's, not timm's std 0.02


@needs_sam2
def test_onnx_matches_metas_image_encoder_at_every_size(sam2_artifact: Path):
    """verify's reference for SAM2 is Meta's ImageEncoder (sam2 package) with the artifact's weights: every
    output, at the export size, min, max and both non-square corners."""
    report = verify_onnx(load_artifact(sam2_artifact), batch_sizes=[1, 2])
    assert {tuple(c.input_shape[2:]) for c in report.checks} == {(64, 64), (32, 32), (96, 128), (32, 128), (96, 32)}
    assert {c.output for c in report.checks} == {"stride4", "stride8", "stride16", "pos_stride4", "pos_stride8",
                                                 "pos_stride16"}
    assert report.passed and max(c.max_abs for c in report.checks) < 1e-4, report.table()
    assert report.reference.startswith("Meta's sam2 1.") and "ImageEncoder" in report.reference
    written = json.loads((sam2_artifact / "verify_report.json").read_text())
    assert written["reference"] == report.reference


def test_position_encodings_follow_the_input_size(sam2_artifact: Path):
    """The position encodings are computed from each input's size (sam2's own module caches them per size,
    and a warm cache would export as a constant of one size): at three sizes every pos output has the level's
    size and equals the sine formula; the Python runtime gives the same, levels in the description's order."""
    artifact = load_artifact(sam2_artifact)
    rng = np.random.default_rng(0)
    with OnnxRuntimeRunner(artifact.description, artifact.onnx_path) as runner:
        for height, width in [(64, 64), (96, 128), (32, 96)]:
            image = rng.standard_normal((2, 3, height, width), dtype=np.float32)
            outputs = runner.infer({"image": image})
            for name, stride in LEVELS:
                pos = outputs[f"pos_{name}"]
                assert pos.shape == (2, 256, height // stride, width // stride) == outputs[name].shape
                assert np.abs(pos - sine_encoding(height // stride, width // stride)).max() < 1e-5, (name, height)
    with vitdeploy.load(sam2_artifact, backend="onnxruntime_cpu") as model:
        pyramid = model.infer(rng.integers(0, 256, (75, 110, 3), dtype=np.uint8))  # -> 64x96
    assert list(pyramid) == ["stride4", "stride8", "stride16", "pos_stride4", "pos_stride8", "pos_stride16"]
    assert [pyramid[name].shape for name, _ in LEVELS] == [(1, 256, 16, 24), (1, 256, 8, 12), (1, 256, 4, 6)]
    assert np.abs(pyramid["pos_stride16"][0] - sine_encoding(4, 6)).max() < 1e-5


@needs_sam2
def test_metas_position_encoding_is_the_formula_even_when_warm():
    """The formula above is sam2's: its PositionEmbeddingSine, warmed at one size, still gives each size its
    own encoding eagerly (it caches per size; the trap is only in a graph that captured the warm entry)."""
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    module = PositionEmbeddingSine(256, normalize=True)
    module(torch.zeros(1, 256, 16, 16))
    for height, width in [(16, 16), (8, 12)]:
        encoding = module(torch.zeros(2, 256, height, width)).numpy()
        assert encoding.shape == (2, 256, height, width)
        assert np.abs(encoding[1] - sine_encoding(height, width)).max() < 1e-5


@requires("tensorrt_rtx")
def test_tensorrt_rtx_builds_the_dynamic_artifact(sam2_artifact: Path, tmp_path: Path):
    """vitdeploy build: the TensorRT-RTX builder takes the dynamic graph with the recipe's min/opt/max profile
    (SAM2's own encoder fails this build: its nearest upsampling is a Resize Myelin rejects)."""
    from conftest import description_json
    from vitdeploy.engine import build as build_engine

    artifact = tmp_path / "artifact"
    shutil.copytree(sam2_artifact, artifact)  # the session's artifact stays without engines
    description = description_json(build_engine(artifact, "tensorrt_rtx", "fp32").path)
    assert description["engine"]["profile"] == {"image": {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64],
                                                          "max": [2, 3, 96, 128]}}
    assert {name: io["shape"] for name, io in description["engine"]["io"].items()} == {
        "image": [-1, 3, -1, -1], **{name: [-1, 256, -1, -1] for name in ["stride4", "stride8", "stride16",
                                                                           "pos_stride4", "pos_stride8",
                                                                           "pos_stride16"]}}


def test_fixed_sam2_export_builds_with_tensorrt_rtx(tmp_path: Path, sam2_checkpoint: Path):
    """Fixed size (SAM2 runs 1024; here 64) without position encodings; TensorRT-RTX builds it."""
    artifact = export_for_test(str(RECIPES / "sam2_dynamic.toml"), tmp_path / "fixed", dynamic=False,
                               position_encodings=False, weights=Weights("checkpoint", checkpoint=sam2_checkpoint))
    description = load_artifact(artifact).description
    assert description.output_names == ["stride4", "stride8", "stride16"] and description.input.mode == "fixed"
    assert onnx_dims(onnx.load(str(artifact / "model.onnx")))["stride4"] == ["batch", 256, 16, 16]
    build_tensorrt_rtx_engine(artifact / "model.onnx", (1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64))
    if HAVE_SAM2:
        report = verify_onnx(load_artifact(artifact), batch_sizes=[1])
        assert report.passed and max(c.max_abs for c in report.checks) < 1e-4


def test_shipped_sam2_recipes_describe_strides_4_8_16():
    for name in SAM2_RECIPES:
        recipe = load_recipe(name)
        assert (recipe.family, recipe.input.size, recipe.input.mode) == ("sam2", (1024, 1024), "fixed")
        outputs = describe_recipe_pyramid(recipe.timm_name, recipe.timm_kwargs, recipe.outputs, recipe.embedding,
                                          recipe.pyramid, family=families.get(recipe.family), position_encodings=True)
        assert [(o.name, o.channels, o.stride) for o in outputs] == [
            ("stride4", 256, 4), ("stride8", 256, 8), ("stride16", 256, 16),
            ("pos_stride4", 256, 4), ("pos_stride8", 256, 8), ("pos_stride16", 256, 16)]
    assert set(SAM2_RECIPES) <= set(available_recipes())


@needs_sam2
@pytest.mark.parametrize("recipe", sorted(SAM2_RECIPES))
def test_meta_encoder_config_is_the_official_sam2_1_config(recipe: str):
    """The trunk vitdeploy hands Meta's Hiera is SAM2.1's own (its configs/sam2.1/*.yaml, through hydra) for
    each shipped recipe: the recipes' timm models are SAM2.1's trunks."""
    import inspect

    from hydra import compose
    from omegaconf import OmegaConf
    from sam2.modeling.backbones.hieradet import Hiera

    with sam2_configs():
        config = compose(config_name=f"configs/sam2.1/{SAM2_RECIPES[recipe]}.yaml")
    official = OmegaConf.to_container(config.model.image_encoder, resolve=True)
    defaults = {k: p.default for k, p in inspect.signature(Hiera).parameters.items()}
    trunk = {k: list(v) if isinstance(v, tuple) else v
             for k, v in {**defaults, **official["trunk"]}.items() if k != "_target_"}
    with torch.device("meta"):
        ours = meta_trunk_config(timm.create_model(load_recipe(recipe).timm_name))
    assert {k: trunk[k] for k in ours} == ours
    assert official["scalp"] == 1 and official["neck"]["fpn_top_down_levels"] == [2, 3]
    assert official["neck"]["d_model"] == 256 and official["neck"]["fpn_interp_model"] == "nearest"


@needs_sam2
def test_a_real_sam2_checkpoint_loads_the_image_encoder_only(tmp_path: Path):
    """Meta's build_sam2 (SAM2.1 tiny, random weights) saved as Meta ships checkpoints: the export model takes
    its image encoder (and nothing else) and computes what that SAM2 model's own image encoder computes."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    with sam2_configs():
        sam = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval")
    with torch.no_grad():
        sam.image_encoder.trunk.pos_embed.normal_(std=1.0)  # sam2 initialises both at zero
        sam.image_encoder.trunk.pos_embed_window.normal_(std=1.0)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam.state_dict()}, path)
    encoder, record = create_model("sam2_hiera_tiny", {}, Weights("checkpoint", checkpoint=path),
                                   family=families.get("sam2"))
    others = {name for name, _ in sam.named_children() if name != "image_encoder"}
    assert {prefix.rstrip(".") for prefix in record["ignored_prefixes"]} - others == {
        name for name, _ in sam.named_parameters(recurse=False)} | {name for name, _ in sam.named_buffers(recurse=False)}
    assert sum(record["ignored_prefixes"].values()) == len(sam.state_dict()) - 162  # 154 trunk + 8 neck tensors
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = sam.image_encoder(image)
        got = encoder.forward_levels(image)
    for level, want in zip(got, expected["backbone_fpn"], strict=True):
        assert level.shape == want.shape and float((level - want).abs().max()) < 1e-5


def test_wrong_checkpoints_are_one_line(tmp_path: Path):
    recipe = str(RECIPES / "sam2_dynamic.toml")
    cases = {  # name: (state dict, the error after "checkpoint PATH ")
        "tiny": ({"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(96, 3, 7, 7),
                  "image_encoder.trunk.blocks.11.norm1.weight": torch.zeros(96)},
                 "holds a SAM2 trunk of 12 blocks, embed width 96 (image_encoder.trunk.blocks.*, "
                 "image_encoder.trunk.patch_embed.proj.weight): expected 5 blocks of width 48 (sam2_hiera_tiny); "
                 "export it with recipe sam2.1_hiera_tiny"),
        "timm trunk": ({"patch_embed.proj.weight": torch.zeros(48, 3, 7, 7)},
                       "has no image_encoder.trunk.patch_embed.proj.weight (its keys start e.g. patch_embed.proj."
                       "weight): expected a SAM2 checkpoint ({'model': state dict of a SAM2 model}, keys "
                       "image_encoder.trunk.* and image_encoder.neck.*)"),
        "no neck": ({k: v for k, v in sam2_state_dict({"stages": [1, 1, 2, 1], "global_att_blocks": [3],
                                                        "embed_dim": 48}).items() if ".neck." not in k},
                    "has a SAM2 trunk but no image_encoder.neck.* tensors: expected SAM2's image encoder with its FPN "
                    "neck (timm's sam2_hiera_* weights hold the trunk only)"),
    }
    for name, (state, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save({"model": state}, path)
        with pytest.raises(VitdeployError) as error:
            export_for_test(recipe, tmp_path / "art", weights=Weights("checkpoint", checkpoint=path))
        assert str(error.value) == f"checkpoint {path} {message}", name
    assert not (tmp_path / "art").exists()
    run = CliRunner().invoke(main, ["export", recipe, "-o", str(tmp_path / "art"), "--checkpoint", str(path)])
    assert (run.exit_code, run.output.splitlines()[-1]) == (1, f"Error: checkpoint {path} {message}")
    run = CliRunner().invoke(main, ["export", "sam2.1_hiera_tiny", "-o", str(tmp_path / "art"), "--pretrained"])
    assert (run.exit_code, run.output.splitlines()[-1]) == (
        1, "Error: --pretrained for sam2_hiera_tiny (family 'sam2'): timm's sam2_hiera_* weights hold the trunk only "
           "(the FPN neck would stay random): use --checkpoint with SAM2's own checkpoint, e.g. sam2.1_hiera_tiny.pt")


def test_sam2_outputs_other_than_its_levels_are_refused():
    recipe = load_recipe("sam2.1_hiera_tiny")
    with pytest.raises(VitdeployError, match=r"^Sam2ImageEncoder has no pooled embedding: expected no embedding"):
        describe_recipe_pyramid(recipe.timm_name, {}, None, True, family=families.get("sam2"))
    with pytest.raises(VitdeployError, match=r"output index 3 is out of range for sam2_hiera_tiny: it has 3 feature "
                                             r"levels \(valid indices 0\.\.2\)"):
        describe_recipe_pyramid(recipe.timm_name, {}, (2, 3), False, family=families.get("sam2"))
    with pytest.raises(VitdeployError, match=r"^family 'hiera' has no position encodings: expected a SAM2 recipe"):
        describe_recipe_pyramid("hieradet_small", {}, None, False, family=families.get("hiera"),
                                position_encodings=True)


def test_verify_without_sam2_names_the_extra(sam2_artifact: Path, monkeypatch: pytest.MonkeyPatch):
    """Everything but the parity reference works without sam2; verify says which extra to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sam2" else real(name, *a))
    with pytest.raises(VitdeployError) as error:
        verify_onnx(load_artifact(sam2_artifact), batch_sizes=[1])
    assert str(error.value) == "sam2 is not installed: pip install 'vitdeploy[sam2]'"
    run = CliRunner().invoke(main, ["verify", str(sam2_artifact), "--batch-sizes", "1"])
    assert (run.exit_code, run.output.splitlines()[-1]) == (1, "Error: sam2 is not installed: pip install "
                                                               "'vitdeploy[sam2]'")
