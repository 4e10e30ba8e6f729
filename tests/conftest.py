"""Shared fixtures: small real exports, made once per test session.

Every model here has random weights from a fixed seed (no model hub at test time); parity does not
depend on the weights being trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitdeploy.export import ExportOptions, export_artifact
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe


def export_for_test(recipe: str, directory: Path, **options) -> Path:
    return export_artifact(load_recipe(recipe), directory, ExportOptions(**options), Progress(3, enabled=False))


@pytest.fixture(scope="session")
def hiera_tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hiera_tiny at its recipe size (224), all four stages."""
    return export_for_test("hiera_tiny", tmp_path_factory.mktemp("export") / "hiera_tiny")


@pytest.fixture(scope="session")
def vit_small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vit_small at 64x64 with the pooled embedding: small enough to export in seconds."""
    return export_for_test("vit_small", tmp_path_factory.mktemp("export") / "vit_small", size=(64, 64),
                           embedding=True)


RECIPES = Path(__file__).parent / "recipes"


@pytest.fixture(scope="session")
def vit_tiny_dynamic_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/recipes/vit_tiny_dynamic.toml: a 2-block ViT-Ti, dynamic 32x32..128x96."""
    return export_for_test(str(RECIPES / "vit_tiny_dynamic.toml"), tmp_path_factory.mktemp("dyn") / "vit")


@pytest.fixture(scope="session")
def vit_tiny_sfp_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/recipes/vit_tiny_sfp.toml: 4 blocks of ViT-Ti -> strides 4/8/16/32 plus the embedding, dynamic."""
    return export_for_test(str(RECIPES / "vit_tiny_sfp.toml"), tmp_path_factory.mktemp("sfp") / "dynamic")


def description_json(engine_path: Path) -> dict:
    """An engine's description as written on disk (`<engine>.json`)."""
    return json.loads(engine_path.with_name(engine_path.name + ".json").read_text())


def onnx_dims(model) -> dict[str, list]:
    """Graph input and output name -> dims (symbolic names or sizes)."""
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}


def build_tensorrt_rtx_engine(onnx_path: Path, min_shape: tuple, opt_shape: tuple, max_shape: tuple) -> bytes:
    """Parse `onnx_path` with the real TensorRT-RTX parser and build an engine for one `image` profile on the
    CPU. Asserts that it parses (with its errors), that the network's outputs are the graph's (names,
    ranks, static dims), and that the engine holds the weights (an engine cannot be opened without a GPU)."""
    import onnx

    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    graph = onnx.load(str(onnx_path)).graph
    expected = {o.name: [d.dim_value or -1 for d in o.type.tensor_type.shape.dim] for o in graph.output}
    parsed = {network.get_output(i).name: list(network.get_output(i).shape) for i in range(network.num_outputs)}
    assert parsed == expected
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", min_shape, opt_shape, max_shape)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None, "TensorRT-RTX failed to build (its errors are logged above)"
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
    assert engine.nbytes >= 0.9 * weights, f"engine of {engine.nbytes} bytes cannot hold {weights} bytes of weights"
    return bytes(engine)
