"""Dynamic-size timm ViT export: in-graph bicubic pos-embed resampling, parity and TensorRT parsing."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.export import Dim

from vitdeploy.adapters.resample import resample_bicubic
from vitdeploy.adapters.vit import adapt_vit
from vitdeploy.families import get as family
from conftest import build_tensorrt_rtx_engine
from vitdeploy.errors import VitdeployError
from vitdeploy.export.onnx_export import OPSET


@pytest.mark.parametrize("antialias", [True, False], ids=["aa", "plain"])
@pytest.mark.parametrize(
    ("in_hw", "out_hw"),
    [
        ((14, 14), (64, 64)),  # upsample
        ((37, 37), (5, 5)),  # downsample: the antialias kernel widens
        ((16, 16), (7, 40)),  # non-square, down along one axis and up along the other
        ((6, 9), (6, 9)),  # identity
        ((4, 4), (1, 1)),
    ],
)
def test_resample_matches_interpolate(in_hw, out_hw, antialias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, *in_hw)
    expected = F.interpolate(x, out_hw, mode="bicubic", align_corners=False, antialias=antialias)
    got = resample_bicubic(x, out_hw, antialias=antialias)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


@dataclass
class Case:
    """One exported ViT: its eager timm twin, ONNX file and the size range it was exported for."""

    name: str
    reference: torch.nn.Module
    onnx_path: Path
    patch: int
    min_grid: int
    max_grid: int


class Pyramid(torch.nn.Module):
    """Two block outputs as NCHW maps plus the pooled pre-logits embedding."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.indices = [0, len(model.blocks) - 1]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        final, feats = self.model.forward_intermediates(image, indices=self.indices, output_fmt="NCHW")
        return (*feats, self.model.forward_head(final, pre_logits=True))


def _tiny_vit(name: str, **kwargs) -> torch.nn.Module:
    """Random, seeded, dynamic-size ViT; pos-embed scaled up so a wrong resampling shows in outputs."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True, depth=2, **kwargs).eval()
    with torch.no_grad():
        model.pos_embed.normal_(std=1.0)
    return model


# (timm name, kwargs, grid range): the stored grid (4 and 10) lies inside each range.
CASES = {
    "vit_cls": ("vit_tiny_patch16_224", {"img_size": 64}, (2, 12)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64}, (2, 12)),  # class + distillation token
    "dinov2_reg4": ("vit_small_patch14_reg4_dinov2", {"img_size": 140}, (2, 14)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory) -> Case:
    name, kwargs, (lo, hi) = CASES[request.param]
    reference = Pyramid(_tiny_vit(name, **kwargs)).eval()
    model = _tiny_vit(name, **kwargs)
    model.load_state_dict(reference.model.state_dict())
    adapt_vit(model, dynamic=True)
    patch = family("vit").size_multiple(model)
    mid = patch * ((lo + hi) // 2)
    dims = {0: Dim("batch", min=1, max=8), 2: patch * Dim("gh", min=lo, max=hi), 3: patch * Dim("gw", min=lo, max=hi)}
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    with torch.no_grad():
        program = torch.onnx.export(
            Pyramid(model).eval(), (torch.randn(2, 3, mid, mid),), dynamo=True, opset_version=OPSET,
            input_names=["image"], output_names=["block_first", "block_last", "embedding"],
            dynamic_shapes={"image": dims},
        )
    program.save(str(path))
    return Case(request.param, reference, path, patch, lo, hi)


def _grids(case: Case) -> list[tuple[int, int]]:
    """Min, max, non-square both ways, and the stored grid +- one (up- and downsampling)."""
    lo, hi = case.min_grid, case.max_grid
    stored = case.reference.model.patch_embed.grid_size[0]
    return [(lo, lo), (hi, hi), (lo + 1, hi - 1), (hi, lo), (stored, stored), (stored - 1, stored + 1)]


def test_onnx_matches_eager_timm_across_sizes(case: Case) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(case.onnx_path), providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    for gh, gw in _grids(case):
        image = torch.randn(2, 3, case.patch * gh, case.patch * gw)
        with torch.no_grad():
            expected = case.reference(image)
        got = session.run(None, {"image": image.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        assert got[0].shape[2:] == (gh, gw)
        worst = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
        assert worst <= 1e-4, f"{case.name} at grid {gh}x{gw}: max abs {worst}"


def test_graph_has_no_antialiased_resize_and_symbolic_sizes(case: Case) -> None:
    graph = onnx.load(str(case.onnx_path)).graph
    assert not [n for n in graph.node if n.op_type == "Resize"]
    for output in graph.output[:2]:
        dims = output.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in (dims[0], dims[2], dims[3]))


def test_tensorrt_rtx_parses_and_builds_dynamic_engine(case: Case) -> None:
    lo, hi, p = case.min_grid * case.patch, case.max_grid * case.patch, case.patch
    build_tensorrt_rtx_engine(case.onnx_path, (1, 3, lo, lo), (1, 3, 4 * p, 4 * p), (2, 3, hi, hi))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vit_tiny_patch16_224", {"img_size": 96}),  # class token, pos-embed covers it
        ("vit_tiny_patch16_224", {"img_size": 96, "class_token": False, "global_pool": "avg"}),  # no prefix
        ("deit3_small_patch16_224", {"img_size": 96}),  # class token outside the pos-embed (no_embed_class)
        ("vit_small_patch14_reg4_dinov2", {"img_size": 84}),  # class + 4 registers, no_embed_class
        ("deit_tiny_distilled_patch16_224", {"img_size": 96}),  # class + distillation token; embedding = their mean
    ],
)
def test_adapted_eager_matches_timm(name: str, kwargs: dict) -> None:
    reference = _tiny_vit(name, **kwargs)
    model = adapt_vit(_tiny_vit(name, **kwargs), dynamic=True)
    patch = family("vit").size_multiple(model)
    torch.manual_seed(2)
    for gh, gw in [(1, 2), (3, 5), (9, 4), (6, 6), (13, 13)]:  # stored grid is 6x6
        image = torch.randn(1, 3, patch * gh, patch * gw)
        with torch.no_grad():
            expected = reference.forward_head(reference.forward_features(image), pre_logits=True)
            got = model.forward_head(model.forward_features(image), pre_logits=True)
        assert (got - expected).abs().max().item() <= 1e-5


def test_adapt_vit_rejects_what_it_cannot_export() -> None:
    static = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32)
    with pytest.raises(VitdeployError, match="dynamic_img_size"):
        adapt_vit(static, dynamic=True)
    assert adapt_vit(static, dynamic=False) is static and "_pos_embed" not in vars(static)
    with pytest.raises(VitdeployError, match="VisionTransformer"):
        adapt_vit(torch.nn.Linear(2, 2), dynamic=True)


class _OwnPosEmbed(timm.models.vision_transformer.VisionTransformer):
    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:  # a subclass vitdeploy does not know
        return super()._pos_embed(x)


def test_adapt_vit_refuses_an_unknown_pos_embed_only_where_it_must_rewrite() -> None:
    """A ViT subclass with its own _pos_embed exports fixed as timm wrote it (nothing to rewrite), and is refused
    (one line) where dynamic_img_size needs the rewrite; distilled DeiT's is reproduced, so both work."""
    fixed = _OwnPosEmbed(img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=2)
    assert adapt_vit(fixed, dynamic=False) is fixed and "_pos_embed" not in vars(fixed)
    dynamic = _OwnPosEmbed(img_size=32, patch_size=16, embed_dim=48, depth=1, num_heads=2, dynamic_img_size=True)
    with pytest.raises(VitdeployError, match=r"^_OwnPosEmbed overrides _pos_embed, which vitdeploy cannot rewrite for "
                                             r"dynamic_img_size; expected a plain timm VisionTransformer or DeiT"):
        adapt_vit(dynamic, dynamic=True)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1, img_size=32)
    assert adapt_vit(distilled, dynamic=False) is distilled and "_pos_embed" not in vars(distilled)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=1, dynamic_img_size=True)
    assert "_pos_embed" in vars(adapt_vit(distilled, dynamic=True))


def test_distilled_deit_exports_fixed_and_matches_timm(tmp_path: Path) -> None:
    """Distilled DeiT through `vitdeploy export` at a fixed size (refused before: it overrides _pos_embed):
    blocks and the embedding match eager timm, whose pre-logits are the mean of both tokens."""
    from conftest import RECIPES, export_for_test
    from vitdeploy.artifact import load_artifact
    from vitdeploy.verify import verify_onnx

    artifact = load_artifact(export_for_test(str(RECIPES / "deit_distilled_fixed.toml"), tmp_path / "deit"))
    assert [(o.name, o.channels) for o in artifact.outputs] == [("block0", 192), ("block1", 192), ("embedding", 192)]
    report = verify_onnx(artifact, batch_sizes=[1, 2])
    assert report.passed and max(c.max_abs for c in report.checks) < 1e-4
    build_tensorrt_rtx_engine(artifact.onnx_path, (1, 3, 48, 64), (1, 3, 48, 64), (2, 3, 48, 64))
