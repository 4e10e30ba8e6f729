"""TensorRT-RTX engines built for real from small exported artifacts: descriptions, load checks, profiles.

TensorRT-RTX builds ahead of time on a CPU, so everything up to deserialisation runs everywhere; the
tests that run an engine are marked `gpu` and skip without one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from conftest import description_json, requires
from vitdeploy.artifact import DESCRIPTION_FILE
from vitdeploy.cli.build import build
from vitdeploy.engine import (Engine, build as build_engine, builder, check_engine, describe_engine,
                              read_engine_description)
from vitdeploy.engine.descriptions import engine_description_path
from vitdeploy.engine.precision import DEFAULT_FP32_OPS, _merge_duplicate_casts, reduced_precision_onnx
from vitdeploy.engine.tensorrt import RTX_PORTABLE, RTX_SUPPORTED, auto_flavour, check_gpu, choose_flavour
from vitdeploy.engine.tensorrt_flavour import use_backend
from vitdeploy.errors import VitdeployError
from vitdeploy.export import export_artifact
from vitdeploy.tools.hardware import compute_capability, gpu_name
from vitdeploy.inputs import check_feed
from vitdeploy.integrity import describe_files
from vitdeploy.optional import install_hint, is_installed
from vitdeploy.recipes import load_recipe_file
from vitdeploy.runners.tensorrt import TensorRTRunner

GPU = compute_capability()
requires_gpu = pytest.mark.skipif(GPU is None, reason="needs an NVIDIA GPU")


def requires_rtx(capabilities: tuple[tuple[int, int], ...]) -> pytest.MarkDecorator:
    """Skip unless TensorRT-RTX is installed and this GPU is one of `capabilities` (e.g. not on an H200)."""
    wanted = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
    here = "no GPU" if GPU is None else f"this GPU is {GPU[0]}.{GPU[1]}"
    return pytest.mark.skipif(GPU not in capabilities or not is_installed("tensorrt_rtx"),
                              reason=f"needs TensorRT-RTX and a GPU of compute capability {wanted} ({here})")


RTX = "tensorrt_rtx"

VIT_FIXED = """
timm_name = "vit_tiny_patch16_224"
family = "vit"
outputs = [0, 1]
timm_kwargs = { depth = 2 }
[input]
size = [64, 64]
batch = [1, 2, 4]
"""
VIT_DYNAMIC = """
timm_name = "vit_tiny_patch16_224"
family = "vit"
outputs = [0, 1]
embedding = true
timm_kwargs = { depth = 2, dynamic_img_size = true }
[input]
mode = "dynamic"
size = [64, 64]
min = [32, 32]
max = [96, 96]
batch = [1, 2, 4]
"""
HIERA_FIXED = """
timm_name = "hiera_tiny_224"
family = "hiera"
timm_kwargs = { stages = [1, 1, 1, 1], embed_dim = 32 }
[input]
size = [64, 64]
batch = [1, 1, 2]
"""


def _export(tmp_path_factory: pytest.TempPathFactory, name: str, recipe: str) -> Path:
    root = tmp_path_factory.mktemp(name)
    (root / f"{name}.toml").write_text(recipe)
    return export_artifact(load_recipe_file(root / f"{name}.toml"), root / "artifact")


@pytest.fixture(scope="module")
def vit_fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory, "vit_fixed", VIT_FIXED)


@pytest.fixture(scope="module")
def vit_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory, "vit_dynamic", VIT_DYNAMIC)


@pytest.fixture(scope="module")
def hiera_fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory, "hiera_fixed", HIERA_FIXED)


@pytest.fixture(scope="module")
def fixed_engine(vit_fixed: Path) -> Path:
    pytest.importorskip(RTX, reason=f"needs {RTX}: {install_hint(RTX)}")
    return build_engine(vit_fixed, RTX, "fp32").path


@pytest.fixture(scope="module")
def dynamic_fp16_engine(vit_dynamic: Path) -> Path:
    pytest.importorskip(RTX, reason=f"needs {RTX}: {install_hint(RTX)}")
    return build_engine(vit_dynamic, RTX, "fp16").path


def _copy_engine(engine: Path, to: Path) -> Path:
    shutil.copy(engine, to / engine.name)
    shutil.copy(engine_description_path(engine), to / engine_description_path(engine).name)
    return to / engine.name


def test_fixed_engine_description(vit_fixed: Path, fixed_engine: Path) -> None:
    meta = json.loads((vit_fixed / DESCRIPTION_FILE).read_text())
    description = description_json(fixed_engine)
    engine = description.pop("engine")
    assert description == meta  # the pyramid description, copied unchanged
    assert fixed_engine.name == "model.tensorrt_rtx.fp32.engine"
    assert engine["file"] == fixed_engine.name
    assert engine["backend"] == RTX and engine["backend_version"] == use_backend(RTX).__version__
    assert engine["precision"] == "fp32" and engine["fp32_ops"] == []
    assert engine["profile"] == {"image": {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}}
    assert engine["compute_capability"] is None and engine["device"] == "cuda"  # portable TensorRT-RTX engine
    data = fixed_engine.read_bytes()
    assert engine["files"] == {fixed_engine.name: {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    assert len(data) > 1_000_000  # the weights are inside
    assert isinstance(engine["build_seconds"], float) and engine["build_seconds"] > 0
    assert engine["io"] == {
        "image": {"mode": "input", "dtype": "float32", "shape": [-1, 3, 64, 64]},
        "block0": {"mode": "output", "dtype": "float32", "shape": [-1, 192, 4, 4]},
        "block1": {"mode": "output", "dtype": "float32", "shape": [-1, 192, 4, 4]},
    }
    assert not [p.name for p in vit_fixed.iterdir() if p.name.startswith(".")]  # no temp files left
    text = describe_engine(read_engine_description(fixed_engine))
    assert "TensorRT-RTX" in text and "[4, 3, 64, 64]" in text and "block1 (feature, 192 ch, stride 16)" in text


def test_dynamic_fp16_engine(vit_dynamic: Path, dynamic_fp16_engine: Path) -> None:
    engine = description_json(dynamic_fp16_engine)["engine"]
    assert engine["precision"] == "fp16" and engine["fp32_ops"] == list(DEFAULT_FP32_OPS)
    assert engine["profile"] == {"image": {"min": [1, 3, 32, 32], "opt": [2, 3, 64, 64], "max": [4, 3, 96, 96]}}
    assert engine["io"]["image"] == {"mode": "input", "dtype": "float32", "shape": [-1, 3, -1, -1]}
    assert engine["io"]["block0"] == {"mode": "output", "dtype": "float32", "shape": [-1, 192, -1, -1]}
    assert engine["io"]["embedding"] == {"mode": "output", "dtype": "float32", "shape": [-1, 192]}
    assert list(engine["io"]) == ["image", "block0", "block1", "embedding"]
    fp32 = build_engine(vit_dynamic, RTX, "fp32").path
    assert dynamic_fp16_engine.stat().st_size < 0.75 * fp32.stat().st_size  # half-size weights


@requires(RTX)
def test_hiera_pyramid_engines(hiera_fixed: Path) -> None:
    """A four-stage pyramid (strides 4..32) through TensorRT-RTX at fp32 and fp16, and fp16 in ORT."""
    expected = {"image": [-1, 3, 64, 64], "stride4": [-1, 32, 16, 16], "stride8": [-1, 64, 8, 8],
                "stride16": [-1, 128, 4, 4], "stride32": [-1, 256, 2, 2]}
    sizes = {}
    for precision in ("fp32", "fp16"):
        engine = build_engine(hiera_fixed, RTX, precision).path
        description = description_json(engine)["engine"]
        assert {name: t["shape"] for name, t in description["io"].items()} == expected
        assert description["profile"] == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 64, 64]}}
        sizes[precision] = description["files"][engine.name]["size_bytes"]
    assert sizes["fp16"] < 0.8 * sizes["fp32"]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    half, _ = reduced_precision_onnx(hiera_fixed / "model.onnx", "fp16")
    cpu = ["CPUExecutionProvider"]
    ref = ort.InferenceSession(str(hiera_fixed / "model.onnx"), providers=cpu).run(None, {"image": x})
    got = ort.InferenceSession(half.SerializeToString(), providers=cpu).run(None, {"image": x})
    for a, b in zip(ref, got):
        assert float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999


def test_fp16_onnx_keeps_io_and_fp32_ops_and_runs_in_onnxruntime(vit_dynamic: Path) -> None:
    onnx_path = vit_dynamic / "model.onnx"
    half, _ = reduced_precision_onnx(onnx_path, "fp16")
    onnx.checker.check_model(half)
    types = {v.name: v.type.tensor_type.elem_type
             for v in onnx.shape_inference.infer_shapes(half).graph.value_info}
    kept = [n for n in half.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert len(kept) == 5 + 2  # per block norm1, norm2, softmax; the final norm before the embedding
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in kept)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 80), dtype=np.float32)  # not the export size
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    for a, b in zip(ref, got):
        assert b.dtype == np.float32 and b.shape == a.shape
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert cosine > 0.999 and np.abs(a - b).max() < 0.05


def test_duplicate_casts_of_older_converters_are_merged() -> None:
    """onnxruntime < 1.32's fp16 converter writes a Cast per fp32 consumer of an fp16 tensor, all with one output
    name (seen on every ViT with onnxruntime 1.30 and 1.31): identical ones are merged, other clashes refused."""
    helper = onnx.helper

    def graph(second_cast_to: int):
        nodes = [helper.make_node("Cast", ["pos"], ["pos_fp32"], to=1, name="a"),
                 helper.make_node("Softmax", ["pos_fp32"], ["s"], name="softmax"),
                 helper.make_node("Cast", ["pos"], ["pos_fp32"], to=second_cast_to, name="b"),
                 helper.make_node("LayerNormalization", ["pos_fp32", "scale"], ["n"], name="norm")]
        return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pos", onnx.TensorProto.FLOAT16, [4])],
                                 [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4]) for n in "sn"])

    merged = graph(second_cast_to=1)
    _merge_duplicate_casts(merged)
    assert [node.name for node in merged.node] == ["a", "softmax", "norm"]
    with pytest.raises(VitdeployError, match=r"^the fp16 conversion wrote 'pos_fp32' twice with different nodes "
                                             r"\(a, b\): expected identical Casts"):
        _merge_duplicate_casts(graph(second_cast_to=onnx.TensorProto.BFLOAT16))


@requires(RTX)
def test_bf16_engine_builds(vit_dynamic: Path) -> None:
    engine = build_engine(vit_dynamic, RTX, "bf16").path
    description = description_json(engine)["engine"]
    assert engine.name == "model.tensorrt_rtx.bf16.engine" and description["precision"] == "bf16"
    assert description["io"]["block1"]["dtype"] == "float32"
    bf16, _ = reduced_precision_onnx(vit_dynamic / "model.onnx", "bf16")
    dtypes = {t.data_type for t in bf16.graph.initializer}
    assert onnx.TensorProto.BFLOAT16 in dtypes and onnx.TensorProto.FLOAT16 not in dtypes


def test_truncated_corrupt_and_missing_description(fixed_engine: Path, tmp_path: Path) -> None:
    engine = _copy_engine(fixed_engine, tmp_path)
    data = engine.read_bytes()
    engine.write_bytes(data[:-100])
    with pytest.raises(VitdeployError) as error:
        check_engine(Engine.at(engine))
    assert str(error.value) == (f"{engine} is {len(data) - 100} bytes, truncated: expected {len(data)} bytes "
                                "(interrupted copy?); copy it again or rebuild it with `vitdeploy build "
                                f"{engine.parent} --backend tensorrt_rtx --precision {Engine.at(engine).precision}`")
    engine.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])
    with pytest.raises(VitdeployError, match="is corrupt: its sha256 differs"):
        check_engine(Engine.at(engine))
    engine_description_path(engine).unlink()
    with pytest.raises(VitdeployError, match="has no description model.tensorrt_rtx.fp32.engine.json beside it"):
        check_engine(Engine.at(engine))


def test_other_backend_version_is_refused(fixed_engine: Path, tmp_path: Path) -> None:
    engine = _copy_engine(fixed_engine, tmp_path)
    description = json.loads(engine_description_path(engine).read_text())
    description["engine"]["backend_version"] = "1.0.0.1"
    engine_description_path(engine).write_text(json.dumps(description))
    installed = use_backend(RTX).__version__
    with pytest.raises(VitdeployError, match=rf"built with TensorRT-RTX 1.0.0.1 but {installed} is installed"):
        check_engine(Engine.at(engine))


@pytest.mark.skipif(GPU is not None, reason="checks the refusal on a machine without a GPU")
def test_no_gpu_is_refused_before_deserialising(fixed_engine: Path) -> None:
    with pytest.raises(VitdeployError, match="no CUDA GPU found .*TensorRT-RTX engines need an NVIDIA GPU"):
        check_engine(Engine.at(fixed_engine))
    with pytest.raises(VitdeployError, match="no CUDA GPU found"):
        TensorRTRunner(Engine.at(fixed_engine))


def test_compute_capability_checks(fixed_engine: Path) -> None:
    portable = read_engine_description(fixed_engine).engine
    built_for = replace(portable, backend="tensorrt", compute_capability="8.6")
    with pytest.raises(VitdeployError, match="built for GPUs of compute capability 8.6, this GPU is 8.9"):
        check_gpu(built_for, (8, 9))
    check_gpu(built_for, (8, 6))
    with pytest.raises(VitdeployError) as error:
        check_gpu(portable, (7, 5))
    assert str(error.value) == ("this GPU has compute capability 7.5; a portable TensorRT-RTX engine runs on 8.6, "
                                "8.9, 12.0, 12.1: rebuild it for this GPU with `vitdeploy build --target-gpu`")
    check_gpu(portable, (12, 0))
    check_gpu(replace(portable, compute_capability="7.5"), (7, 5))


@pytest.mark.parametrize("capability", [(8, 0), (9, 0), (10, 0)], ids=["A100", "H100-H200", "B200"])
def test_tensorrt_rtx_refuses_data_center_gpus_and_names_the_alternatives(fixed_engine: Path, capability) -> None:
    """NVIDIA's TensorRT-RTX support matrix lists RTX-class GPUs only: an A100 or H200 is told why, at once."""
    with pytest.raises(VitdeployError) as error:
        check_gpu(read_engine_description(fixed_engine).engine, capability)
    major, minor = capability
    assert str(error.value) == (
        f"{gpu_name()} has compute capability {major}.{minor}, which TensorRT-RTX does not support (it runs on 7.5, "
        "8.6, 8.9, 12.0, 12.1: RTX-class GPUs): use full TensorRT (pip install 'vitdeploy[trt]', then `vitdeploy "
        "build --backend tensorrt`) or ONNX Runtime's CUDA provider (pip install 'vitdeploy[ort-gpu]')")


def test_feed_outside_profile_prints_the_table(dynamic_fp16_engine: Path) -> None:
    description = read_engine_description(dynamic_fp16_engine)

    def check(feed: dict) -> None:
        check_feed(description.input, feed, description.engine.profile, torch_tensors=True)

    check({"image": np.zeros((4, 3, 96, 32), np.float32)})  # the corners of the profile pass
    with pytest.raises(VitdeployError) as error:
        check({"image": np.zeros((5, 3, 64, 64), np.float32)})
    lines = str(error.value).splitlines()
    assert lines[0] == "input 'image' has shape [5, 3, 64, 64], outside the engine profile (batch 5 is not in 1..4):"
    assert lines[1].split() == ["min", "opt", "max"]
    assert lines[2] == "image  [1, 3, 32, 32]  [2, 3, 64, 64]  [4, 3, 96, 96]"
    with pytest.raises(VitdeployError, match=r"\(height 112 is not in 32..96\)"):
        check({"image": np.zeros((1, 3, 112, 64), np.float32)})
    with pytest.raises(VitdeployError, match="size 40x64 is not a multiple of 16"):
        check({"image": np.zeros((1, 3, 40, 64), np.float32)})
    with pytest.raises(VitdeployError, match="has dtype float16: expected float32"):
        check({"image": np.zeros((1, 3, 64, 64), np.float16)})
    check({"image": torch.zeros((1, 3, 32, 48))})  # torch tensors (CUDA ones skip copies)
    with pytest.raises(VitdeployError, match="is a list: expected a numpy.ndarray or torch.Tensor"):
        check({"image": [[0.0]]})
    with pytest.raises(VitdeployError, match=r"feed has inputs \['input'\]: expected exactly \['image'\]"):
        check({"input": np.zeros((1, 3, 64, 64), np.float32)})


@requires(RTX)
def test_outputs_that_differ_from_the_description_are_refused(vit_fixed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(vit_fixed, copy, ignore=shutil.ignore_patterns("*.engine*"))
    meta = json.loads((copy / DESCRIPTION_FILE).read_text())
    meta["outputs"][1]["name"] = "stride16"
    (copy / DESCRIPTION_FILE).write_text(json.dumps(meta))
    with pytest.raises(VitdeployError, match=r"reads inputs \['image'\] and outputs \['block0', 'block1'\] from .*: "
                                             r"expected \['image'\] and \['block0', 'stride16'\]"):
        build_engine(copy, RTX, "fp32")
    assert not list(copy.glob("*.engine*"))


@requires(RTX)
def test_graph_the_parser_rejects_is_one_error_and_writes_nothing(vit_fixed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(vit_fixed, copy, ignore=shutil.ignore_patterns("*.engine*"))
    model = onnx.load(str(copy / "model.onnx"))
    model.graph.node[0].op_type = "NoSuchOp"  # an op no TensorRT importer knows
    onnx.save(model, str(copy / "model.onnx"))
    meta = json.loads((copy / DESCRIPTION_FILE).read_text())
    meta["export"]["files"] = {name: vars(record) for name, record in describe_files([copy / "model.onnx"]).items()}
    (copy / DESCRIPTION_FILE).write_text(json.dumps(meta))
    with pytest.raises(VitdeployError) as error:
        build_engine(copy, RTX, "fp32")
    assert str(error.value) == (f"TensorRT-RTX {pytest.importorskip('tensorrt_rtx').__version__} cannot parse "
                                f"{copy / 'model.onnx'} (fp32): Could not parse ONNX correctly (TensorRT's errors "
                                "are above)")
    assert not list(copy.glob("*.engine*"))


def test_auto_backend_follows_the_support_matrices() -> None:
    """`--backend auto` builds where the engine can run: full TensorRT on a GPU, TensorRT-RTX on a CPU or an RTX
    GPU, and a one-line refusal (not an engine that is refused at load) on a GPU TensorRT-RTX does not support."""
    both, rtx_only = ("tensorrt", RTX), (RTX,)
    assert choose_flavour(None, rtx_only) == RTX  # no GPU: a portable engine, built on the CPU
    assert choose_flavour(None, both) == RTX  # full TensorRT cannot build without a GPU; TensorRT-RTX can
    assert choose_flavour((8, 9), rtx_only) == RTX and choose_flavour((7, 5), rtx_only) == RTX
    assert choose_flavour((9, 0), both) == "tensorrt" and choose_flavour((8, 6), both) == "tensorrt"
    assert choose_flavour(None, ("tensorrt",)) == "tensorrt"  # its build then says that it needs a GPU
    for major, minor in ((8, 0), (9, 0), (10, 0)):
        with pytest.raises(VitdeployError) as error:
            choose_flavour((major, minor), rtx_only)
        assert str(error.value) == (
            f"--backend auto: full TensorRT is not installed, and {gpu_name()} has compute capability {major}.{minor}, "
            "which TensorRT-RTX does not support (it runs on 7.5, 8.6, 8.9, 12.0, 12.1: RTX-class GPUs): use full "
            "TensorRT (pip install 'vitdeploy[trt]', then `vitdeploy build --backend tensorrt`) or ONNX Runtime's "
            "CUDA provider (pip install 'vitdeploy[ort-gpu]')")
    with pytest.raises(VitdeployError, match=r"no TensorRT backend is installed: pip install 'vitdeploy\[trt\]'"):
        choose_flavour((9, 0), ())
    installed = [family for family in ("tensorrt", RTX) if is_installed(family)]
    if installed:
        assert auto_flavour() == choose_flavour(GPU, installed)
    else:
        with pytest.raises(VitdeployError, match=r"^no TensorRT backend is installed"):
            auto_flavour()


@requires(RTX)
def test_backend_choice_and_switching(vit_fixed: Path) -> None:
    from polygraphy import config
    import polygraphy.backend.trt.loader as loader

    with pytest.raises(VitdeployError, match="unknown engine backend 'coreml': expected one of tensorrt, "
                                             "tensorrt_rtx, openvino, onnxruntime"):
        builder("coreml")
    trt = use_backend(RTX)
    assert config.USE_TENSORRT_RTX and loader.trt.Builder is trt.Builder
    if not is_installed("tensorrt"):
        with pytest.raises(VitdeployError, match=r"tensorrt is not installed: pip install 'vitdeploy\[trt\]'"):
            build_engine(vit_fixed, "tensorrt", "fp32")
        assert config.USE_TENSORRT_RTX and loader.trt.Builder is trt.Builder  # a failed switch changes nothing


@requires(RTX)
def test_build_progress_and_no_timing_cache_on_rtx(vit_fixed: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "timing.cache"
    build_engine(vit_fixed, RTX, "fp32", timing_cache=cache)
    err = capsys.readouterr().err
    assert "[2/3] building the engine (portable)" in err
    assert "s Building engine (" in err and "Building engine finished" in err  # TensorRT's own phases
    assert f"timing cache {cache} not used: TensorRT-RTX has none" in err and not cache.exists()


@requires(RTX)
def test_cli_build(vit_fixed: Path) -> None:
    result = CliRunner().invoke(build, [str(vit_fixed), "--backend", RTX, "--precision", "fp16",
                                        "--fp32-op", "LayerNormalization"])
    assert result.exit_code == 0, result.output
    engine = Path(result.stdout.strip().splitlines()[-1])
    assert engine == vit_fixed / "model.tensorrt_rtx.fp16.engine" and engine.is_file()
    assert description_json(engine)["engine"]["fp32_ops"] == ["LayerNormalization"]
    result = CliRunner().invoke(build, [str(vit_fixed), "--precision", "fp8"])
    assert result.exit_code == 2 and "'fp8' is not one of" in result.output


@pytest.mark.gpu
@requires_rtx(RTX_PORTABLE)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(vit_dynamic: Path, precision: str) -> None:
    engine = build_engine(vit_dynamic, RTX, precision).path
    tolerance = description_json(engine)["tolerance"][precision]
    x = np.random.default_rng(1).standard_normal((3, 3, 48, 80), dtype=np.float32)
    session = ort.InferenceSession(str(vit_dynamic / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = session.run(None, {"image": x})
    with TensorRTRunner(Engine.at(engine)) as runner:
        got = runner.infer({"image": x})
        with pytest.raises(VitdeployError, match="outside the engine profile"):
            runner.infer({"image": np.zeros((5, 3, 64, 64), np.float32)})
    assert list(got) == ["block0", "block1", "embedding"]
    for a, b in zip(ref, got.values()):
        cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
        assert b.shape == a.shape and cosine >= tolerance["min_cosine"]
        assert np.abs(a - b).max() <= max(tolerance["max_abs"], 1e-3)


@pytest.mark.gpu
@requires_rtx(RTX_SUPPORTED)
def test_rtx_engine_for_this_gpu(vit_fixed: Path) -> None:
    engine = description_json(build_engine(vit_fixed, RTX, "fp32", target_gpu=True).path)["engine"]
    assert engine["compute_capability"] == f"{GPU[0]}.{GPU[1]}"


@pytest.mark.gpu
@requires_gpu
@pytest.mark.skipif(not is_installed("tensorrt"), reason="needs full TensorRT (TensorRT-RTX has no timing cache)")
def test_timing_cache_makes_a_rebuild_faster(vit_fixed: Path, tmp_path: Path) -> None:
    """The rebuild finds every tactic timing in the cache, so the cache comes back unchanged (build times
    are printed, not asserted: a shared GPU makes them noisy)."""
    cache = tmp_path / "timing.cache"
    first = description_json(build_engine(vit_fixed, "tensorrt", "fp16", timing_cache=cache).path)["engine"]
    assert first["compute_capability"] == f"{GPU[0]}.{GPU[1]}" and cache.stat().st_size > 0
    timings = cache.read_bytes()
    second = description_json(build_engine(vit_fixed, "tensorrt", "fp16", timing_cache=cache).path)["engine"]
    print(f"build {first['build_seconds']}s, rebuild {second['build_seconds']}s", file=sys.stderr)
    assert cache.read_bytes() == timings
