"""OpenVINO engines on the CPU, built and run for real: description, parity, load-time checks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vitdeploy
from conftest import RECIPES, export_for_test
from vitdeploy.cli import main
from vitdeploy.description import TensorIO
from vitdeploy.engine import Engine
from vitdeploy.errors import VitdeployError
from vitdeploy.verify import verify_engine

ov = pytest.importorskip("openvino")
from vitdeploy.engine import build  # noqa: E402
from vitdeploy.engine.openvino import version_of  # noqa: E402
from vitdeploy.runners.openvino import OpenVINORunner  # noqa: E402

BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dynamic ViT with an fp32 OpenVINO engine, built through the CLI."""
    artifact = export_for_test(str(RECIPES / "vit_tiny_dynamic.toml"), tmp_path_factory.mktemp("ov") / "vit")
    result = CliRunner().invoke(main, ["build", str(artifact), "--backend", "openvino"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == str(artifact / "model.openvino.fp32.xml")
    return artifact


def test_description_records_the_ir_and_how_to_compile_it(vit: Path):
    xml = vit / "model.openvino.fp32.xml"
    description = json.loads((vit / "model.openvino.fp32.xml.json").read_text())
    engine = description.pop("engine")
    assert description == json.loads((vit / "vitdeploy.json").read_text())
    assert {k: engine[k] for k in ("file", "backend", "backend_version", "precision", "device",
                                   "inference_precision")} == {
        "file": xml.name, "backend": "openvino", "backend_version": version_of(ov), "precision": "fp32",
        "device": "CPU", "inference_precision": "f32"}
    assert engine["profile"] == {"image": {"min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [4, 3, 128, 96]}}
    assert engine["io"] == {"image": {"mode": "input", "dtype": "float32", "shape": [-1, 3, -1, -1]},
                            "block0": {"mode": "output", "dtype": "float32", "shape": [-1, 192, -1, -1]},
                            "block1": {"mode": "output", "dtype": "float32", "shape": [-1, 192, -1, -1]}}
    assert {name: record["size_bytes"] for name, record in engine["files"].items()} == {
        name: (vit / name).stat().st_size for name in ("model.openvino.fp32.xml", "model.openvino.fp32.bin")}
    # fp32 weights, never compressed to fp16: the .bin is as large as the ONNX file's weights
    assert (vit / "model.openvino.fp32.bin").stat().st_size > 0.95 * (vit / "model.onnx").stat().st_size
    assert not [p.name for p in vit.iterdir() if p.name.startswith(".")]


def test_fp32_engine_verifies_over_the_dynamic_range(vit: Path):
    report = verify_engine(Engine.at(vit / "model.openvino.fp32.xml"), batch_sizes=[1, 3])
    assert report.passed and len(report.checks) == 5 * 2 * 2
    assert max(check.max_abs for check in report.checks) < 1e-5
    assert (vit / "model.openvino.fp32.xml.verify.json").is_file()


@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 (AVX-512 BF16 / AMX): OpenVINO would compute f32")
def test_bf16_engine_verifies_with_its_own_tolerance(vit: Path):
    engine = build(vit, "openvino", "bf16")
    report = verify_engine(engine, batch_sizes=[2])
    xml = engine.path
    # bf16's bound, 0.1 (scaled by an output's magnitude above 1), not fp32's 1e-4
    assert report.passed and report.precision == "bf16" and all(c.tol_max_abs >= 0.1 for c in report.checks)
    assert 1e-4 < max(check.max_abs for check in report.checks) < 0.1  # really bf16, not f32
    assert json.loads(xml.with_name(xml.name + ".json").read_text())["engine"]["inference_precision"] == "bf16"


def test_load_runs_the_engine_and_matches_onnxruntime(vit: Path):
    image = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    with vitdeploy.load(vit, backend="openvino") as model, vitdeploy.load(vit, backend="onnxruntime_cpu") as ort:
        assert model.backend == "openvino" and model.engine.name == "model.openvino.fp32.xml"
        got, expected = model.infer(image), ort.infer(image)
        assert list(got) == ["block0", "block1"] and got["block0"].shape == (1, 192, 64 // 16, 96 // 16)
        assert max(float(np.abs(got[k] - expected[k]).max()) for k in got) < 1e-5
        with pytest.raises(VitdeployError, match=r"outside the engine profile \(batch 5 is not in 1..4\)"):
            model.infer(np.zeros((5, 3, 64, 64), np.float32))


def test_the_first_shapes_compile_static_and_the_rest_share_a_dynamic_compile(vit: Path):
    """Static shapes are faster (the runner's docstring); past STATIC_SHAPES one dynamic compile serves the rest."""
    feeds = [np.random.default_rng(0).standard_normal(shape).astype(np.float32)
             for shape in ((2, 3, 64, 64), (1, 3, 32, 48), (3, 3, 96, 64), (1, 3, 128, 96))]
    with OpenVINORunner(Engine.at(vit / "model.openvino.fp32.xml")) as runner, \
            vitdeploy.load(vit, backend="onnxruntime-cpu") as ort:
        for feed in feeds:
            got, expected = runner.infer({"image": feed}), ort.run(feed)
            assert max(float(np.abs(got[k] - expected[k]).max()) for k in got) < 1e-5
        compiled = {shape: str(request.get_compiled_model().inputs[0].get_partial_shape())
                    for shape, request in runner._requests.items()}
    assert compiled == {(1, 3, 64, 64): "[1,3,64,64]", (2, 3, 64, 64): "[2,3,64,64]", None: "[?,3,?,?]"}


def test_auto_prefers_openvino_on_a_cpu(vit: Path):
    with vitdeploy.load(vit) as model:
        assert model.backend == "openvino" or model.backend in ("tensorrt", "tensorrt_rtx", "onnxruntime_cuda")


def test_a_bf16_engine_runs_only_when_asked_for(vit: Path, tmp_path: Path):
    """bf16 changes the numbers: an artifact whose only OpenVINO engine is bf16 runs model.onnx by default."""
    copy = tmp_path / "vit"
    shutil.copytree(vit, copy, ignore=shutil.ignore_patterns("model.openvino.*"))
    build(copy, "openvino", "bf16")
    with vitdeploy.load(copy) as model:
        assert model.backend in ("onnxruntime_cuda", "onnxruntime_cpu") and model.engine is None
    with pytest.raises(VitdeployError, match=r"openvino: no fp32 or fp16 openvino engine in the artifact \(it has "
                                             r"bf16: ask for it with precision\)"):
        vitdeploy.load(copy, backend="openvino")
    with vitdeploy.load(copy, precision="bf16") as model:
        assert model.backend == "openvino" and model.engine.name == "model.openvino.bf16.xml"


@pytest.mark.parametrize("damage", ["truncate", "flip", "older"])
def test_damaged_or_newer_engine_is_refused_before_compiling(vit: Path, tmp_path: Path, damage: str):
    copy = tmp_path / "vit"
    shutil.copytree(vit, copy)
    xml, weights, description = (copy / f"model.openvino.fp32.{ext}" for ext in ("xml", "bin", "xml.json"))
    if damage == "truncate":
        size = weights.stat().st_size
        weights.write_bytes(weights.read_bytes()[:-10])
        expected = (f"{weights} is {size - 10} bytes, truncated: expected {size} bytes (interrupted copy?); copy it "
                    f"again or rebuild it with `vitdeploy build {copy} --backend openvino --precision fp32`")
    elif damage == "flip":
        text = xml.read_bytes()
        xml.write_bytes(text.replace(b'version="11"', b'version="12"', 1))
        expected = (f"{xml} is corrupt: its sha256 differs from the one recorded when it was written (same size, "
                    f"changed bytes); copy it again or rebuild it with `vitdeploy build {copy} --backend openvino "
                    "--precision fp32`")
    else:
        meta = json.loads(description.read_text())
        meta["engine"]["backend_version"] = "9999.1.0"
        description.write_text(json.dumps(meta))
        expected = (f"engine was built with OpenVINO 9999.1.0 but {version_of(ov)} is installed: an IR loads on "
                    "the same or a newer OpenVINO; upgrade openvino or rebuild the engine")
    with pytest.raises(VitdeployError) as error:
        OpenVINORunner(Engine.at(xml))
    assert str(error.value) == expected
    result = CliRunner().invoke(main, ["verify", str(xml)])
    assert result.exit_code == 1 and result.output == f"Error: {expected}\n"


def test_auto_load_of_a_corrupt_engine_is_an_error_not_a_fall_back(vit: Path, tmp_path: Path):
    """Choosing among engines checks sizes only; the one chosen is hashed once when it loads, and a changed byte
    there names the file instead of quietly running ONNX Runtime."""
    copy = tmp_path / "vit"
    shutil.copytree(vit, copy)
    weights = copy / "model.openvino.fp32.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VitdeployError) as error:
        vitdeploy.load(copy)
    assert str(error.value) == (f"{weights} is corrupt: its sha256 differs from the one recorded when it was written "
                                f"(same size, changed bytes); copy it again or rebuild it with `vitdeploy build {copy} "
                                "--backend openvino --precision fp32`")


def test_engine_load_does_not_read_the_onnx_that_onnxruntime_checks(vit: Path, tmp_path: Path):
    """Loading checks model.onnx's size; its sha256 is checked by what reads the graph (ONNX Runtime, builders),
    so an OpenVINO load never hashes it: a changed byte there stops ONNX Runtime, not the engine."""
    copy = tmp_path / "vit"
    shutil.copytree(vit, copy)
    onnx_path = copy / "model.onnx"
    data = bytearray(onnx_path.read_bytes())
    data[-100] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with vitdeploy.load(copy, backend="openvino") as damaged, vitdeploy.load(vit, backend="openvino") as intact:
        assert all(np.array_equal(a, b) for a, b in zip(damaged.infer(image).values(), intact.infer(image).values()))
    with pytest.raises(VitdeployError) as error:
        vitdeploy.load(copy, backend="onnxruntime_cpu")
    assert str(error.value) == (f"{onnx_path} is corrupt: its sha256 differs from the one recorded when it was "
                                "written (same size, changed bytes); re-export the artifact")
    result = CliRunner().invoke(main, ["build", str(copy), "--backend", "openvino"])
    assert result.exit_code == 1 and result.output == f"Error: {error.value}\n"


def test_fp16_is_refused_on_a_cpu(vit: Path):
    result = CliRunner().invoke(main, ["build", str(vit), "--backend", "openvino", "--precision", "fp16"])
    assert result.exit_code == 1
    assert result.output == "Error: OpenVINO (CPU) cannot build precision 'fp16': expected one of fp32, bf16, int8\n"


def test_missing_openvino_names_the_extra(vit: Path):
    """With the package unimportable (sys.modules entry None), the build says which extra to install."""
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from vitdeploy.cli import main\n"
            f"main(['build', {str(vit)!r}, '--backend', 'openvino'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "Error: openvino is not installed: pip install 'vitdeploy[openvino]'"


def test_baked_hiera_runs_on_uint8_pixels(tmp_path: Path):
    artifact = export_for_test(str(RECIPES / "hiera_abswin_dynamic.toml"), tmp_path / "hiera", bake_preprocessing=True)
    engine = build(artifact, "openvino")
    assert engine.section.io["image"] == TensorIO(mode="input", dtype="uint8", shape=(-1, -1, -1, 3))
    report = verify_engine(engine, batch_sizes=[1])
    assert report.passed and {c.output for c in report.checks} == {"stride4", "stride8", "stride16", "stride32"}
