import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch

from conftest import onnx_dims
from vitdeploy.artifact import METADATA_KEY
from vitdeploy.errors import VitdeployError
from vitdeploy.pyramid import feature_levels

HIERA_TINY_SHAPES = {"stride4": [96, 56, 56], "stride8": [192, 28, 28], "stride16": [384, 14, 14],
                     "stride32": [768, 7, 7]}


def test_hiera_outputs_are_named_by_stride_with_dynamic_batch(hiera_tiny_artifact: Path):
    model = onnx.load(str(hiera_tiny_artifact / "model.onnx"))
    assert onnx_dims(model) == {"image": ["batch", 3, 224, 224],
                                **{name: ["batch", *shape] for name, shape in HIERA_TINY_SHAPES.items()}}
    assert {o.domain: o.version for o in model.opset_import}[""] == 20
    ops = Counter(node.op_type for node in model.graph.node)
    blocks = timm.create_model("hiera_tiny_224", pretrained=False).blocks.modules()
    norms_and_gelus = Counter(type(m).__name__ for m in blocks if isinstance(m, (torch.nn.LayerNorm, torch.nn.GELU)))
    # Opset 20: every LayerNorm and GELU of the blocks is one node, none is decomposed into ReduceMean / Pow / Erf.
    assert (ops["LayerNormalization"], ops["Gelu"]) == (norms_and_gelus["LayerNorm"], norms_and_gelus["GELU"]) == (24, 12)
    assert not {"ReduceMean", "Pow", "Erf"} & set(ops)
    onnx.checker.check_model(model, full_check=True)


def test_description_matches_timm_feature_info(hiera_tiny_artifact: Path):
    meta = json.loads((hiera_tiny_artifact / "vitdeploy.json").read_text())
    with torch.device("meta"):
        levels = feature_levels(timm.create_model("hiera_tiny_224"), "hiera_tiny_224")
    assert [(o["channels"], o["stride"], o["index"]) for o in meta["outputs"]] == \
        [(level["num_chs"], level["reduction"], i) for i, level in enumerate(levels)]
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["size_multiple"] == 32
    assert meta["weights"]["source"] == "random" and len(meta["weights"]["sha256"]) == 64
    assert set(meta["versions"]) == {"vitdeploy", "torch", "timm", "onnx"}


def test_onnx_metadata_props_hold_the_description(hiera_tiny_artifact: Path):
    model = onnx.load(str(hiera_tiny_artifact / "model.onnx"))
    embedded = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    description = json.loads((hiera_tiny_artifact / "vitdeploy.json").read_text())
    assert embedded == {k: v for k, v in description.items() if k not in ("export", "created_utc")}


def test_vit_outputs_are_blocks_plus_embedding_and_any_batch_runs(vit_small_artifact: Path):
    session = onnxruntime.InferenceSession(str(vit_small_artifact / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names == ["block2", "block5", "block8", "block11", "embedding"]
    outputs = session.run(None, {"image": np.zeros((3, 3, 64, 64), np.float32)})
    assert [list(o.shape) for o in outputs] == [[3, 384, 4, 4]] * 4 + [[3, 384]]


def test_feature_support_is_required():
    with pytest.raises(VitdeployError, match="timm model 'linear' has no feature support"):
        feature_levels(torch.nn.Linear(2, 2), "linear")
