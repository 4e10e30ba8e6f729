"""Dynamic height and width: symbolic output shapes, parity across the range, checks before the runtime."""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import RECIPES, export_for_test, requires
from vitdeploy.artifact import load_artifact
from vitdeploy.errors import VitdeployError
from vitdeploy.runners.onnxruntime import OnnxRuntimeRunner
from vitdeploy.verify import verify_onnx



def test_output_shapes_are_symbolic_in_the_input_size(vit_tiny_dynamic_artifact: Path):
    model = onnx.load(str(vit_tiny_dynamic_artifact / "model.onnx"))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims == {"image": ["batch", 3, "height", "width"],
                    "block0": ["batch", 192, "height/16", "width/16"],
                    "block1": ["batch", 192, "height/16", "width/16"]}
    assert not [n for n in model.graph.node if n.op_type == "Resize"]


def test_parity_at_every_corner_of_the_range(vit_tiny_dynamic_artifact: Path):
    report = verify_onnx(load_artifact(vit_tiny_dynamic_artifact), batch_sizes=[1, 3])
    sizes = {tuple(c.input_shape[2:]) for c in report.checks}
    assert sizes == {(64, 64), (32, 32), (128, 96), (32, 96), (128, 32)}
    assert report.passed and max(c.max_abs for c in report.checks) < 1e-4


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 40, 48), "input 'image': size 40x48 is not a multiple of 16 (the backbone's size rule)"),
    ((1, 3, 160, 32), "input 'image': size 160x32 is outside the artifact's range 32x32 .. 128x96"),
    ((5, 3, 64, 64), "input 'image': batch 5 is outside the artifact's batch range 1..4"),
    ((1, 64, 64, 3), "input 'image' has shape [1, 64, 64, 3]: expected NCHW [batch, 3, height, width] "
                     "(looks like NHWC: transpose to NCHW)"),
])
def test_runner_rejects_bad_sizes_before_the_runtime(vit_tiny_dynamic_artifact: Path, shape, message):
    artifact = load_artifact(vit_tiny_dynamic_artifact)
    with OnnxRuntimeRunner(artifact.description, artifact.onnx_path) as runner:
        with pytest.raises(VitdeployError) as error:
            runner.infer(OrderedDict(image=np.zeros(shape, np.float32)))
    assert str(error.value) == message


def test_plain_hiera_cannot_go_dynamic(tmp_path: Path):
    with pytest.raises(VitdeployError, match="hiera_tiny_224 runs at one resolution only"):
        export_for_test("hiera_tiny", tmp_path / "x", dynamic=True)
    assert list(tmp_path.iterdir()) == []


@requires("tensorrt_rtx")
@pytest.mark.parametrize("recipe", ["hiera_abswin_dynamic", "hieradet_dynamic"])
def test_hiera_dynamic_parity_and_tensorrt_rtx_build(tmp_path: Path, recipe: str):
    """Hiera abswin and HieraDet follow the input size at run time; the TensorRT-RTX builder takes the
    graph with the recipe's min/opt/max profile."""
    from vitdeploy.engine import build as build_engine
    from conftest import description_json

    artifact = export_for_test(str(RECIPES / f"{recipe}.toml"), tmp_path / recipe)
    report = verify_onnx(load_artifact(artifact), batch_sizes=[1, 2])
    assert {tuple(c.input_shape[2:]) for c in report.checks} == {(96, 96), (64, 64), (128, 160), (64, 160),
                                                                 (128, 64)}
    assert report.passed and max(c.max_abs for c in report.checks) < 1e-4
    engine = build_engine(artifact, "tensorrt_rtx", "fp32").path
    description = description_json(engine)
    assert description["engine"]["profile"] == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 96, 96],
                                                      "max": [2, 3, 128, 160]}}
    assert description["engine"]["io"]["stride32"] == {"mode": "output", "dtype": "float32", "shape": [-1, 768, -1, -1]}
