"""Hiera / HieraDet export: 4-D attention and run-time sizes, checked against eager timm through ONNX
Runtime at several sizes, and parsed and built (dynamic profile) by TensorRT-RTX.

Models are the real timm configs shrunk to one or two blocks per stage and 32 channels, so each exports in
seconds; that still exercises mask-unit attention with and without q-pooling, global attention,
HieraDet's padded windows and every unroll / reroll step. Position embeddings are scaled up and
LayerScale set to 1 (timm initialises it at 1e-5), so a wrong resampling or attention shows in outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from timm.layers import LayerScale
from torch.export import Dim

from vitdeploy.adapters.hiera import adapt_hiera, hiera_size_multiple, hiera_supports_dynamic
from conftest import build_tensorrt_rtx_engine
from vitdeploy.errors import VitdeployError
from vitdeploy.export.onnx_export import OPSET

SMALL = {"stages": (1, 1, 1, 1), "embed_dim": 32}
DET = {"stages": (1, 1, 2, 1), "embed_dim": 32, "global_att_blocks": (3,)}  # timm has no global q-pool block
MULTIPLE = 32


def _model(name: str, img_size: tuple[int, int] | None = None, **kwargs) -> torch.nn.Module:
    """Seeded random timm model with weights that make every part of the network matter."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **({"img_size": img_size} if img_size else {}), **kwargs)
    with torch.no_grad():
        for pname in ("pos_embed", "pos_embed_win", "pos_embed_window"):
            if getattr(model, pname, None) is not None:
                getattr(model, pname).normal_(std=1.0)
        for module in model.modules():
            if isinstance(module, LayerScale):
                module.gamma.fill_(1.0)
    return model.eval()


def _reference(name: str, kwargs: dict, state: dict, size: tuple[int, int]) -> torch.nn.Module:
    """Eager timm at `size`: Hiera built for it (its Unroll/Reroll are sized at construction), same weights."""
    model = _model(name, size if name.startswith("hiera_") else None, **kwargs)
    model.load_state_dict(state)  # strict: no parameter or buffer depends on the build size
    return model


class Pyramid(torch.nn.Module):
    """All four stages (NCHW) and the pooled pre-logits embedding, as the lead's export wraps them."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        final, feats = self.model.forward_intermediates(image, indices=[0, 1, 2, 3], output_fmt="NCHW")
        return (*feats, self.model.forward_head(final, pre_logits=True))


@dataclass
class Case:
    """One exported model: fixed when `units` is one value, else H and W range over units * 32."""

    timm_name: str
    kwargs: dict
    example: tuple[int, int]
    units: tuple[int, int]
    sizes: list[tuple[int, int]]
    state: dict = field(default_factory=dict)
    onnx_path: Path | None = None

    @property
    def dynamic(self) -> bool:
        return self.units[0] != self.units[1]


# Global pos-embed grids: abswin 16x16, HieraDet here 14x14 (as sam2_hiera_base_plus). Token grids are
# size / 4, so 32 downsamples, 64 keeps (abswin) or upsamples (HieraDet), 160 upsamples.
SIZES = [(32, 32), (160, 160), (64, 64), (96, 128), (32, 160), (128, 32)]
CASES = {
    "hiera_fixed": Case("hiera_tiny_224", SMALL, (96, 64), (0, 0), [(96, 64)]),
    "hiera_abswin": Case("hiera_small_abswin_256", SMALL, (64, 96), (1, 5), SIZES),
    "hieradet": Case("hieradet_small", {**DET, "global_pos_size": (14, 14)}, (64, 96), (1, 5), SIZES),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory) -> Case:
    case = copy.deepcopy(CASES[request.param])
    built = case.example if case.timm_name.startswith("hiera_") else None
    model = _model(case.timm_name, built, **case.kwargs)
    case.state = copy.deepcopy(model.state_dict())
    adapt_hiera(model, case.dynamic)
    dims = {0: Dim("batch", min=1, max=8)}
    if case.dynamic:
        lo, hi = case.units
        dims.update({2: MULTIPLE * Dim("h_units", min=lo, max=hi), 3: MULTIPLE * Dim("w_units", min=lo, max=hi)})
    case.onnx_path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    with torch.no_grad():
        program = torch.onnx.export(Pyramid(model).eval(), (torch.randn(2, 3, *case.example),), dynamo=True,
                                    opset_version=OPSET, input_names=["image"], dynamic_shapes={"image": dims})
    program.save(str(case.onnx_path))
    return case


def test_onnx_matches_eager_timm_at_each_size(case: Case) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(case.onnx_path), providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    for i, (height, width) in enumerate(case.sizes):
        reference = Pyramid(_reference(case.timm_name, case.kwargs, case.state, (height, width)))
        image = torch.randn(1 + 2 * (i % 2), 3, height, width)
        with torch.no_grad():
            expected = reference(image)
        got = session.run(None, {"image": image.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        assert [g.shape[2:] for g in got[:4]] == [(height // s, width // s) for s in (4, 8, 16, 32)]
        errors = [float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)]
        assert max(errors) <= 1e-4, f"{case.timm_name} at {height}x{width}: max abs per output {errors}"


def test_graph_has_no_resize_and_symbolic_sizes(case: Case) -> None:
    graph = onnx.load(str(case.onnx_path), load_external_data=False).graph
    assert not [n.op_type for n in graph.node if n.op_type == "Resize"]
    for output in graph.output[:4]:
        dims = output.type.tensor_type.shape.dim
        assert dims[0].dim_param  # batch
        assert all(bool(d.dim_param) == case.dynamic for d in dims[2:])


def test_tensorrt_rtx_parses_and_builds(case: Case) -> None:
    lo, hi = (MULTIPLE * u for u in case.units) if case.dynamic else (min(case.example), max(case.example))
    small, large = ((lo, lo), (hi, hi)) if case.dynamic else (case.example, case.example)
    build_tensorrt_rtx_engine(case.onnx_path, (1, 3, *small), (1, 3, *case.example), (2, 3, *large))


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "unfused"])
@pytest.mark.parametrize(
    ("name", "kwargs", "sizes"),
    [
        ("hiera_tiny_224", SMALL, [(224, 224)]),
        ("hiera_small_abswin_256", SMALL, [(32, 96), (256, 192)]),
        # 14x14 global grid and the expand projection at stage changes
        ("hiera_base_abswin_256", {"stages": (1, 2, 1, 1), "embed_dim": 32}, [(32, 32), (96, 64), (224, 224)]),
        ("hieradet_small", DET, [(32, 64), (224, 96)]),  # 7-unit side: padding
    ],
)
def test_adapted_eager_matches_timm(name: str, kwargs: dict, sizes: list, fused: bool) -> None:
    built = sizes[0] if name.startswith("hiera_") else None
    model = _model(name, built, **kwargs)
    state = copy.deepcopy(model.state_dict())
    adapt_hiera(model, hiera_supports_dynamic(model))
    assert model.state_dict().keys() == state.keys()
    torch.manual_seed(2)
    for size in sizes:
        reference = _reference(name, kwargs, state, size)
        for module in (*reference.modules(), *model.modules()):
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused
        image = torch.randn(2, 3, *size)
        with torch.no_grad():
            expected, got = Pyramid(reference)(image), Pyramid(model)(image)
            assert (model(image) - reference(image)).abs().max().item() <= 1e-5
        for g, e in zip(got, expected):
            assert g.shape == e.shape and (g - e).abs().max().item() <= 1e-5


def test_size_rules() -> None:
    plain = timm.create_model("hiera_tiny_224", pretrained=False, **SMALL)
    abswin = timm.create_model("hiera_small_abswin_256", pretrained=False, **SMALL)
    det = timm.create_model("hieradet_small", pretrained=False, **DET)
    assert [hiera_supports_dynamic(m) for m in (plain, abswin, det)] == [False, True, True]
    assert [hiera_size_multiple(m) for m in (plain, abswin, det)] == [32, 32, 32]
    # patch stride 4 x lcm(mask unit 16, q_stride 2 ** 3 unrolls)
    wide_units = timm.create_model("hiera_tiny_224", pretrained=False, **SMALL, mask_unit_size=(16, 16))
    assert hiera_size_multiple(wide_units) == 64
    # patch stride 4 x lcm(first window 16, q_stride 2 ** 3 q-pool stages)
    wide_windows = timm.create_model("hieradet_small", pretrained=False, **DET, window_spec=(16, 8, 16, 8))
    assert hiera_size_multiple(wide_windows) == 64


def test_adapt_hiera_rejects_what_it_cannot_export() -> None:
    plain = _model("hiera_tiny_224", (64, 64), **SMALL)
    with pytest.raises(VitdeployError, match="build size only"):
        adapt_hiera(plain, dynamic=True)
    adapt_hiera(plain, dynamic=False)
    with pytest.raises(VitdeployError, match="64x64 inputs only"):
        plain.forward_intermediates(torch.randn(1, 3, 96, 64))
    with pytest.raises(VitdeployError, match="mask=None"):
        plain.forward_intermediates(torch.randn(1, 3, 64, 64), mask=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(VitdeployError, match="expected a timm Hiera or HieraDet"):
        adapt_hiera(torch.nn.Linear(2, 2), dynamic=False)
