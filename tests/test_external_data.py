"""Models over 2 GB keep their weights in model.onnx.data: tested with a tiny ViT forced to external data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import RECIPES, description_json
import vitdeploy
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.errors import VitdeployError
from vitdeploy.verify import verify_onnx


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("external") / "vit"
    result = CliRunner().invoke(main, ["export", str(RECIPES / "vit_tiny_dynamic.toml"), "--external-data",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(f"wrote {out}/ (") and \
        "MiB ONNX in model.onnx, model.onnx.data, export" in result.stdout.splitlines()[0]
    return out


def test_every_onnx_file_is_recorded(external: Path):
    files = json.loads((external / "vitdeploy.json").read_text())["export"]["files"]
    assert list(files) == ["model.onnx", "model.onnx.data"]
    assert files["model.onnx"]["size_bytes"] < 200_000 < files["model.onnx.data"]["size_bytes"]
    assert {name: record["size_bytes"] for name, record in files.items()} == \
        {name: (external / name).stat().st_size for name in files}


def test_external_data_artifact_verifies(external: Path):
    report = verify_onnx(load_artifact(external), batch_sizes=[1, 2])
    assert report.passed and len(report.checks) == 5 * 2 * 2


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_external_data_is_refused_on_load(external: Path, tmp_path: Path, damage: str):
    copy = tmp_path / "vit"
    shutil.copytree(external, copy)
    data_path = copy / "model.onnx.data"
    data = data_path.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        data_path.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:])
        expected = (f"{data_path} is corrupt: its sha256 differs from the one recorded when it was written (same size, "
                    "changed bytes); re-export the artifact")
    else:
        data_path.write_bytes(data[:-4096])
        expected = (f"{data_path} is {len(data) - 4096} bytes, truncated: expected {len(data)} bytes (interrupted "
                    "copy?); re-export the artifact")
    with pytest.raises(VitdeployError) as error:
        vitdeploy.load(copy, backend="onnxruntime_cpu")
    assert str(error.value) == expected


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_rtx_builds_from_external_data(external: Path, precision: str):
    pytest.importorskip("tensorrt_rtx")
    from vitdeploy.engine import build as build_engine
    from vitdeploy.progress import Progress

    engine = build_engine(external, "tensorrt_rtx", precision, progress=Progress(3, enabled=False)).path
    description = description_json(engine)
    assert description["export"] == json.loads((external / "vitdeploy.json").read_text())["export"]
    assert description["engine"]["io"]["block1"] == {"mode": "output", "dtype": "float32", "shape": [-1, 192, -1, -1]}
    assert engine.stat().st_size > 0.4 * (external / "model.onnx.data").stat().st_size  # the weights are inside
    assert not [p.name for p in external.iterdir() if p.name.startswith(".")]  # no scratch files left
