"""Shared fixtures: small real exports, made once per test session.

Every model here has random weights from a fixed seed (no model hub at test time); parity does not
depend on the weights being trained.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from vitdeploy.export import ExportOptions, export_artifact
from vitdeploy.optional import install_hint, is_installed
from vitdeploy.progress import Progress
from vitdeploy.recipes import load_recipe


# `python -m vitdeploy.cli` with Python's own SIGINT handler, for the tests that interrupt it: a suite started
# with SIGINT ignored (`nohup ... &`) passes the ignored handler on to its children, which Python then keeps.
INTERRUPTIBLE_CLI = [sys.executable, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, "
                     "signal.default_int_handler); sys.argv[0] = 'vitdeploy'; "
                     "runpy.run_module('vitdeploy.cli', run_name='__main__', alter_sys=True)"]


def requires(module: str) -> pytest.MarkDecorator:
    """Skip unless the optional `module` is installed (the test extra installs them all; a machine with part of
    them, such as the GPU proof's, runs the rest)."""
    return pytest.mark.skipif(not is_installed(module), reason=f"needs {module}: {install_hint(module)}")


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
# scikit-image's photos for int8: the first six calibrate, the last three are held out
PHOTOS = ["astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
          "gravel.png", "moon.png", "rocket.jpg"]


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


def sam2_state_dict(timm_kwargs: dict, seed: int = 5) -> dict:
    """A SAM2 checkpoint's state dict as Meta ships it, at the size of `timm_kwargs`: the image encoder under
    SAM2's names (image_encoder.trunk.* with mlp.layers.{0,1}, image_encoder.neck.convs.*) with its position
    embeddings drawn at std 1 (timm draws them at 0.02, sam2 at zero: parity would not see a wrong resampling),
    plus tensors of the rest of SAM2 (memory, prompt encoder, mask decoder), which an export must leave out."""
    import timm
    import torch

    from vitdeploy.sam2.encoder import Sam2ImageEncoder

    torch.manual_seed(seed)
    encoder = Sam2ImageEncoder(timm.create_model("sam2_hiera_tiny", **timm_kwargs))
    with torch.no_grad():
        encoder.trunk.pos_embed.normal_(std=1.0)
        encoder.trunk.pos_embed_window.normal_(std=1.0)
    state = {f"image_encoder.{k.replace('mlp.fc1', 'mlp.layers.0').replace('mlp.fc2', 'mlp.layers.1')}": v
             for k, v in encoder.state_dict().items()}
    return state | {"memory_attention.layers.0.self_attn.q_proj.weight": torch.randn(256, 256),
                    "memory_attention.layers.0.self_attn.q_proj.bias": torch.randn(256),
                    "sam_mask_decoder.conv_s0.weight": torch.randn(32, 256, 1, 1),
                    "sam_prompt_encoder.no_mask_embed.weight": torch.randn(1, 256),
                    "no_mem_embed": torch.randn(1, 1, 256), "maskmem_tpos_enc": torch.randn(7, 1, 1, 64)}


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/recipes/sam2_dynamic.toml's size as a SAM2 checkpoint file ({"model": state dict})."""
    import torch

    from vitdeploy.recipes import load_recipe_file

    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_test.pt"
    torch.save({"model": sam2_state_dict(load_recipe_file(RECIPES / "sam2_dynamic.toml").timm_kwargs)}, path)
    return path


@pytest.fixture(scope="session")
def sam2_artifact(tmp_path_factory: pytest.TempPathFactory, sam2_checkpoint: Path) -> Path:
    """tests/recipes/sam2_dynamic.toml (SAM2.1 tiny, 5 blocks, 48 channels, with position encodings), dynamic
    32x32..96x128, exported from that checkpoint."""
    from vitdeploy.models import Weights

    return export_for_test(str(RECIPES / "sam2_dynamic.toml"), tmp_path_factory.mktemp("sam2") / "artifact",
                           weights=Weights("checkpoint", checkpoint=sam2_checkpoint))


@pytest.fixture(scope="session")
def aoti_engine(tmp_path_factory: pytest.TempPathFactory, vit_tiny_dynamic_artifact: Path) -> Path:
    """An AOTInductor fp32 package for the CPU, built in a copy of vit_tiny_dynamic (its engines change `auto`)."""
    from vitdeploy.engine import build

    directory = tmp_path_factory.mktemp("aoti") / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, directory)
    return build(directory, "aoti", "fp32", device="cpu", progress=Progress(3, enabled=False)).path


SAM2_DECODER_SEEDS = {512: 1, 1024: 2}  # one checkpoint per size, so their decoders belong to different encoders


def save_meta_sam2_checkpoint(path: Path, seed: int, image_size: int) -> None:
    """Meta's SAM2.1 (build_sam2) with tests/recipes/sam2_dynamic.toml's trunk and seeded random weights (position
    embeddings and no_mem_embed drawn at std 1: sam2 initialises them at or near zero), saved as Meta ships it."""
    import timm
    import torch

    from vitdeploy.recipes import load_recipe_file
    from vitdeploy.sam2.reference import meta_sam2

    with torch.device("meta"):
        trunk = timm.create_model("sam2_hiera_tiny", **load_recipe_file(RECIPES / "sam2_dynamic.toml").timm_kwargs)
    torch.manual_seed(seed)
    model = meta_sam2(trunk, None, image_size)
    with torch.no_grad():
        model.image_encoder.trunk.pos_embed.normal_(std=1.0)
        model.image_encoder.trunk.pos_embed_window.normal_(std=1.0)
        model.no_mem_embed.normal_(std=1.0)
    torch.save({"model": model.state_dict()}, path)


@pytest.fixture(scope="session")
def sam2_decoder_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """size -> a SAM2 artifact exported with --decoder, fixed at that size (512 and 1024), each from a whole
    SAM2 checkpoint of its own (Meta's build_sam2; needs the sam2 package)."""
    from vitdeploy.models import Weights

    pytest.importorskip("sam2", reason="the SAM2 decoder is exported from Meta's sam2 modules (vitdeploy[sam2])")
    root = tmp_path_factory.mktemp("sam2_decoder")
    made = {}
    for size, seed in SAM2_DECODER_SEEDS.items():
        checkpoint = root / f"sam2.1_test_{size}.pt"
        save_meta_sam2_checkpoint(checkpoint, seed, size)
        made[size] = export_for_test(str(RECIPES / "sam2_dynamic.toml"), root / f"artifact{size}", dynamic=False,
                                     size=(size, size), position_encodings=False, decoder=True,
                                     weights=Weights("checkpoint", checkpoint=checkpoint))
    return made


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PHOTOS copied from scikit-image into one folder (int8 calibration and its gate); modules with other
    photos define their own `photos`."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) ships the photos")
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(Path(skimage_data.__file__).parent / name, folder / name)
    return folder
