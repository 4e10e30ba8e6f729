"""int8 for real: calibrated on scikit-image's photos, gated per level on held-out ones, run by three runtimes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import vitdeploy
from conftest import PHOTOS, RECIPES, description_json, export_for_test, requires
from vitdeploy.cli import main
from vitdeploy.engine import Engine, build
from vitdeploy.errors import VitdeployError
from vitdeploy.verify import verify_engine

pytest.importorskip("skimage.data", reason="scikit-image (test extra) ships the photos")
INT8 = "model.onnxruntime.int8.onnx"


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory, vit_tiny_dynamic_artifact: Path, photos: Path) -> Path:
    """The tiny dynamic ViT with its static int8 graph, made through the CLI's int8 builder."""
    artifact = tmp_path_factory.mktemp("int8") / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact)
    result = CliRunner().invoke(main, ["build", str(artifact), "--backend", "onnxruntime", "--precision", "int8",
                                       "--calibration", str(photos), "--samples", "6", "--held-out", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "held out: 3 photos, every level passed its gate (min cosine 0.99, max rel_l2 0.15)"
    assert [line.split()[0] for line in lines[2:4]] == ["block0", "block1"] and lines[-1] == str(artifact / INT8)
    return artifact


def test_the_int8_graph_is_symmetric_qdq_on_weight_matmuls_only(vit: Path):
    graph = onnx.load(str(vit / INT8)).graph
    producers = {output: node for node in graph.node for output in node.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    quantized = [n for n in matmuls if producers.get(n.input[1]) and producers[n.input[1]].op_type == "DequantizeLinear"]
    assert len(quantized) == 2 * 4  # qkv, proj, fc1, fc2 of 2 blocks
    # float: attention's q@k^T and attn@v per block, and the two of the in-graph position-embedding resampling
    assert len(matmuls) - len(quantized) == 2 * 2 + 2
    zero_points = [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("zero_point")]
    assert zero_points and all(not z.any() and z.dtype == np.int8 for z in zero_points)  # what TensorRT takes
    kept_float = [n for n in graph.node if n.op_type in ("LayerNormalization", "Softmax", "Gelu", "Conv", "Add")]
    assert kept_float and not [n.name for n in kept_float for i in n.input
                               if producers.get(i) and producers[i].op_type == "DequantizeLinear"]


def test_the_description_records_how_and_what_was_measured(vit: Path, photos: Path):
    description = description_json(vit / INT8)
    engine = description["engine"]
    assert (engine["backend"], engine["precision"], engine["device"]) == ("onnxruntime", "int8", "CPU")
    quantization = engine["quantization"]
    assert {k: quantization[k] for k in ("mode", "format", "method", "activations", "weights", "quantized_ops")} == {
        "mode": "static", "format": "QDQ", "method": "minmax", "activations": "s8", "weights": "s8 per channel",
        "quantized_ops": ["MatMul"]}
    assert [Path(r["path"]).name for r in quantization["calibration"]] == PHOTOS[:6]
    assert [Path(r["path"]).name for r in quantization["held_out"]] == PHOTOS[6:]
    assert set(quantization["gates"]) == {"block0", "block1"}
    assert all(g["min_cosine"] >= 0.99 and g["max_rel_l2"] <= 0.15 for g in quantization["gates"].values())
    assert description["tolerance"]["int8"] == {"max_abs": None, "min_cosine": 0.99, "max_rel": 0.15}


def test_one_graph_runs_in_onnxruntime_openvino_and_builds_in_tensorrt_rtx(vit: Path, photos: Path):
    report = verify_engine(Engine.at(vit / INT8))  # on the recorded held-out photos
    assert report.passed and report.precision == "int8" and len(report.checks) == 3 * 2
    pytest.importorskip("openvino")
    xml = build(vit, "openvino", "int8")
    assert description_json(xml.path)["engine"]["inference_precision"] == "bf16"  # float parts in bf16
    assert verify_engine(xml).passed
    with vitdeploy.load(vit, precision="int8") as model:
        assert model.backend == "openvino" and model.engine == xml
    with vitdeploy.load(vit, backend="onnxruntime", precision="int8") as model:
        pyramid = model.infer(photos / "moon.png")  # 512x512 -> clamped to the range's 128x96
        assert pyramid["block1"].shape == (1, 192, 8, 6)
    pytest.importorskip("tensorrt_rtx")
    engine = build(vit, "tensorrt_rtx", "int8")
    assert description_json(engine.path)["engine"]["quantization"]["mode"] == "static"


@requires("tensorrt_rtx")
def test_u8_activations_run_on_cpus_but_tensorrt_refuses_them(vit_tiny_dynamic_artifact: Path, photos: Path,
                                                              tmp_path: Path):
    artifact = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact)
    build(artifact, "onnxruntime", "int8", calibration=photos, samples=6, held_out=3, activations="u8")
    with pytest.raises(VitdeployError) as error:
        build(artifact, "tensorrt_rtx", "int8")
    assert str(error.value) == (f"{INT8} quantises activations as u8 with zero points, which TensorRT rejects: "
                                "quantize again with --activations s8")


@requires("openvino")
def test_dynamic_int8_needs_no_calibration_and_runs_in_onnxruntime_only(vit_tiny_dynamic_artifact: Path,
                                                                        photos: Path, tmp_path: Path):
    artifact = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact)
    path = build(artifact, "onnxruntime", "int8", dynamic=True).path
    quantization = description_json(path)["engine"]["quantization"]
    assert quantization["mode"] == "dynamic" and quantization["gates"] == {}  # no photos: no gate ran
    with pytest.raises(VitdeployError, match=r"records no held-out photos: pass --images FOLDER"):
        verify_engine(Engine.at(path))
    assert verify_engine(Engine.at(path), images=photos).passed
    with pytest.raises(VitdeployError) as error:
        build(artifact, "openvino", "int8")
    assert str(error.value) == (f"{INT8} is dynamically quantised, which runs in ONNX Runtime only: quantize again "
                                "with --calibration (static QDQ) for OpenVINO")
    edited = description_json(path)  # a description that lost its record of how the graph was quantised
    del edited["engine"]["quantization"]
    path.with_name(f"{path.name}.json").write_text(json.dumps(edited))
    with pytest.raises(VitdeployError) as error:
        build(artifact, "openvino", "int8")
    assert str(error.value) == f"the description of {INT8} has no quantization record: quantize the artifact again"


def test_hiera_quantizes_and_passes_its_gates(tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch):
    artifact = export_for_test(str(RECIPES / "hiera_abswin_dynamic.toml"), tmp_path / "hiera")
    before = sorted(p.name for p in artifact.iterdir())
    monkeypatch.chdir(tmp_path)  # symbolic shape inference fails on Hiera and dumps into the CWD
    built = build(Path(artifact.name), "onnxruntime", "int8", calibration=photos, samples=6, held_out=3)  # relative
    gates = built.section.quantization["gates"]
    assert set(gates) == {"stride4", "stride8", "stride16", "stride32"}
    assert all(gate["min_cosine"] >= built.description.tolerance["int8"].min_cosine for gate in gates.values())
    assert sorted(p.name for p in artifact.iterdir()) == sorted(
        [*before, "model.onnxruntime.int8.onnx", "model.onnxruntime.int8.onnx.json"])
    assert [p.name for p in tmp_path.iterdir()] == [artifact.name]


def test_a_missed_gate_writes_nothing(vit_tiny_dynamic_artifact: Path, photos: Path, tmp_path: Path):
    artifact = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact)
    meta = json.loads((artifact / "vitdeploy.json").read_text())
    meta["tolerance"]["int8"] = {"max_abs": None, "min_cosine": 0.9999999, "max_rel": 0.15}
    (artifact / "vitdeploy.json").write_text(json.dumps(meta))
    before = sorted(p.name for p in artifact.iterdir())
    result = CliRunner().invoke(main, ["quantize", str(artifact), "--calibration", str(photos), "--samples", "6",
                                       "--held-out", "3"])
    assert result.exit_code == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: the int8 graph misses its accuracy gate (cosine >= 0.9999999, rel_l2 <= 0.15) "
                            "on held-out photos at block0 (cosine 0.99")
    assert error.endswith("or relax [tolerance.int8]; nothing was written")
    assert sorted(p.name for p in artifact.iterdir()) == before


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "too few"])
def test_calibration_folder_errors_are_one_line(vit_tiny_dynamic_artifact: Path, photos: Path, tmp_path: Path,
                                                case: str):
    folder = tmp_path / "calib"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        shutil.copy(photos / "coffee.png", folder / "coffee.png")
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    if case == "too few":
        for name in PHOTOS[:3]:
            shutil.copy(photos / name, folder / name)
    expected = {
        "missing": f"calibration folder {folder} does not exist: expected a folder of PNG or JPEG photos",
        "empty": f"calibration folder {folder} holds no PNG or JPEG files: expected photos like the ones the model "
                 "will see",
        "unreadable": f"{folder / 'broken.jpg'} is not a readable image: expected a PNG or JPEG file",
        "too few": f"calibration folder {folder} has 3 images: expected at least 36 (32 to calibrate, 4 held out to "
                   "check the int8 graph)",
    }[case]
    result = CliRunner().invoke(main, ["quantize", str(vit_tiny_dynamic_artifact), "--calibration", str(folder)])
    assert result.exit_code == 1 and result.output == f"Error: {expected}\n"
    assert not (vit_tiny_dynamic_artifact / INT8).exists()


def test_static_int8_without_photos_is_one_line(vit_tiny_dynamic_artifact: Path):
    result = CliRunner().invoke(main, ["quantize", str(vit_tiny_dynamic_artifact)])
    assert result.exit_code == 1
    assert result.output == ("Error: static int8 needs calibration photos: pass --calibration FOLDER (or --dynamic, "
                             "which needs none)\n")


def test_calibration_options_belong_to_the_int8_builder(vit_tiny_dynamic_artifact: Path, photos: Path):
    result = CliRunner().invoke(main, ["build", str(vit_tiny_dynamic_artifact), "--backend", "openvino", "--precision",
                                       "int8", "--calibration", str(photos)])
    assert result.exit_code == 1
    assert result.output == ("Error: --calibration with --backend openvino: expected --backend onnxruntime --precision "
                             "int8, the int8 graph that the OpenVINO and TensorRT int8 engines are then built from\n")


@requires("openvino")
def test_an_int8_engine_without_the_int8_graph_names_the_command_that_makes_it(vit_tiny_dynamic_artifact: Path):
    result = CliRunner().invoke(main, ["build", str(vit_tiny_dynamic_artifact), "--backend", "openvino", "--precision",
                                       "int8"])
    assert result.exit_code == 1
    assert result.output == (f"Error: {vit_tiny_dynamic_artifact} has no int8 graph: make it first with `vitdeploy "
                             f"build {vit_tiny_dynamic_artifact} --backend onnxruntime --precision int8 --calibration "
                             "FOLDER`, then build the OpenVINO int8 engine\n")
    assert not list(vit_tiny_dynamic_artifact.glob("model.openvino.int8.*"))
