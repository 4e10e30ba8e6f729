"""`vitdeploy triton`: model repositories read back with Triton's own ModelConfig protobuf (tritonclient's
model_config_pb2) and checked against the model's IO: the ONNX graph, the OpenVINO IR as OpenVINO reads it,
a TensorRT engine's recorded `io`. No Triton server runs here, so none loads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from conftest import onnx_dims
from vitdeploy import engine
from vitdeploy.artifact import load_artifact
from vitdeploy.cli import main
from vitdeploy.description import EngineSection
from vitdeploy.engine.descriptions import engine_profile
from vitdeploy.integrity import describe_files
from vitdeploy.progress import Progress
from vitdeploy.engine.descriptions import onnx_io

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs vitdeploy[triton]")


def write(*args: str) -> str:
    result = CliRunner().invoke(main, ["triton", *args])
    assert result.exit_code == 0, result.output
    return result.output


def parse(model_dir: Path):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def dims(config_tensors) -> dict[str, list[int]]:
    return {tensor.name: list(tensor.dims) for tensor in config_tensors}


def graph_dims(onnx_path: Path) -> dict[str, list[int]]:
    """The graph's dims without the (symbolic) batch dimension, -1 where symbolic."""
    import onnx

    found = onnx_dims(onnx.load(str(onnx_path), load_external_data=False))
    assert all(isinstance(shape[0], str) for shape in found.values())  # dynamic batch: max_batch_size applies
    return {name: [d if isinstance(d, int) else -1 for d in shape[1:]] for name, shape in found.items()}


def test_onnxruntime_repository_matches_the_onnx_graph(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    output = write(str(vit_tiny_dynamic_artifact), "-o", str(tmp_path / "repo"), "--instances", "2",
                   "--batch-wait-ms", "2.5")
    model_dir = tmp_path / "repo" / "vit"
    assert output.splitlines()[0] == f"wrote {model_dir}/: config.pbtxt, 1/{{model.onnx}}, vitdeploy.json"
    config = parse(model_dir)
    artifact = load_artifact(vit_tiny_dynamic_artifact)
    expected = graph_dims(artifact.onnx_path)
    assert (config.name, config.platform, config.backend, config.max_batch_size) == \
        ("vit", "onnxruntime_onnx", "", artifact.input.batch.max)
    assert dims(config.input) == {"image": expected["image"]} == {"image": [3, -1, -1]}
    assert [o.name for o in config.output] == artifact.output_names == ["block0", "block1"]
    assert dims(config.output) == {name: expected[name] for name in artifact.output_names}
    assert {t.data_type for t in [*config.input, *config.output]} == {model_config_pb2.TYPE_FP32}
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_AUTO)]
    assert (model_dir / "1" / "model.onnx").read_bytes() == artifact.onnx_path.read_bytes()
    assert json.loads((model_dir / "vitdeploy.json").read_text()) == artifact.description.to_dict()


def test_fixed_artifact_with_embedding(vit_small_artifact: Path, tmp_path: Path):
    write(str(vit_small_artifact), "-o", str(tmp_path), "--name", "vit_small.v1")
    config = parse(tmp_path / "vit_small.v1")
    assert config.max_batch_size == 32
    assert dims(config.input) == {"image": [3, 64, 64]}
    assert dims(config.output) == {"block2": [384, 4, 4], "block5": [384, 4, 4], "block8": [384, 4, 4],
                                   "block11": [384, 4, 4], "embedding": [384]}
    assert dims(config.output) == {name: d for name, d in graph_dims(vit_small_artifact / "model.onnx").items()
                                   if name != "image"}


def test_openvino_repository_matches_the_ir(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    ov = pytest.importorskip("openvino")
    artifact_dir = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact_dir)
    xml = engine.build(artifact_dir, "openvino", "fp32", progress=Progress(2, enabled=False)).path
    write(str(artifact_dir), "-o", str(tmp_path / "repo"), "--backend", "openvino")
    model_dir = tmp_path / "repo" / "vit"
    config = parse(model_dir)
    assert (config.backend, config.platform, config.max_batch_size) == ("openvino", "", 4)
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert dict(config.parameters)["PERFORMANCE_HINT"].string_value == "LATENCY"
    model = ov.Core().read_model(str(model_dir / "1" / "model.xml"))  # the IR Triton's backend will read
    ir = {port.get_any_name(): [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()][1:]
          for port in [*model.inputs, *model.outputs]}
    assert dims(config.input) | dims(config.output) == ir
    assert [o.name for o in config.output] == [port.get_any_name() for port in model.outputs]
    assert (model_dir / "1" / "model.bin").read_bytes() == xml.with_suffix(".bin").read_bytes()


def test_int8_graph_for_onnxruntime(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    """`--precision int8`: the artifact's int8 graph (`vitdeploy build --backend onnxruntime`) as the ONNX Runtime
    model."""
    artifact_dir = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact_dir)
    result = CliRunner().invoke(main, ["build", str(artifact_dir), "--backend", "onnxruntime", "--precision", "int8",
                                       "--dynamic"])
    assert result.exit_code == 0, result.output
    int8 = artifact_dir / "model.onnxruntime.int8.onnx"
    write(str(artifact_dir), "-o", str(tmp_path / "repo"), "--precision", "int8")
    model_dir = tmp_path / "repo" / "vit"
    config = parse(model_dir)
    assert (config.platform, config.max_batch_size) == ("onnxruntime_onnx", 4)
    assert dims(config.input) | dims(config.output) == graph_dims(int8)
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == int8.read_bytes()
    assert json.loads((model_dir / "vitdeploy.json").read_text())["engine"]["precision"] == "int8"


def _stand_in_tensorrt_engine(artifact_dir: Path, backend: str) -> Path:
    """A TensorRT engine file and its description, as `vitdeploy build --backend tensorrt` writes them. No full
    TensorRT builds without a GPU, so the bytes are a stand-in; the io is the ONNX graph's, which is what
    TensorRT's parser reports for these graphs (conftest.build_tensorrt_rtx_engine checks that)."""
    artifact = load_artifact(artifact_dir)
    path = artifact_dir / f"model.{backend}.fp16.engine"
    path.write_bytes(b"serialized engine stand-in")
    section = EngineSection(file=path.name, backend=backend, backend_version="10.13.0", precision="fp16",
                            device="cuda", profile=engine_profile(artifact.input), io=onnx_io(artifact.onnx_path),
                            files=describe_files([path]), build_seconds=1.0, compute_capability="9.0")
    path.with_name(path.name + ".json").write_text(artifact.description.with_engine(section).to_json())
    return path


def test_tensorrt_plan_from_the_engine_description(vit_tiny_dynamic_artifact: Path, tmp_path: Path):
    artifact_dir = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact_dir)
    plan = _stand_in_tensorrt_engine(artifact_dir, "tensorrt")
    write(str(artifact_dir), "-o", str(tmp_path / "repo"), "--backend", "tensorrt")
    model_dir = tmp_path / "repo" / "vit"
    config = parse(model_dir)
    io = json.loads(plan.with_name(plan.name + ".json").read_text())["engine"]["io"]
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 4)
    assert dims(config.input) | dims(config.output) == {name: t["shape"][1:] for name, t in io.items()}
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.plan"]
    assert (model_dir / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert json.loads((model_dir / "vitdeploy.json").read_text())["engine"]["file"] == plan.name
    plan.write_bytes(b"serialized engine stand-IN")  # same size, other bytes
    result = CliRunner().invoke(main, ["triton", str(artifact_dir), "-o", str(tmp_path / "other"), "--backend",
                                       "tensorrt"])
    assert result.exit_code == 1 and result.output == (
        f"Error: {plan} is corrupt: its sha256 differs from the one recorded when it was written (same size, changed "
        f"bytes); copy it again or rebuild it with `vitdeploy build {plan.parent} --backend tensorrt --precision "
        f"{engine.Engine.at(plan).precision}`\n")


def test_mistakes_are_one_line(vit_tiny_dynamic_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    artifact_dir = tmp_path / "vit"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact_dir)
    _stand_in_tensorrt_engine(artifact_dir, "tensorrt_rtx")
    repo = tmp_path / "repo"
    cases = [
        (["--backend", "tensorrt"], f"Error: vit has no tensorrt engine; model.tensorrt_rtx.fp16.engine is a "
                                    f"TensorRT-RTX engine, which Triton's TensorRT backend does not run: make one "
                                    f"with `vitdeploy build {artifact_dir} --backend tensorrt --precision fp32`"),
        (["--backend", "openvino"], f"Error: vit has no openvino engine: make one with `vitdeploy build {artifact_dir} "
                                    "--backend openvino --precision fp32`"),
        (["--kind", "cpu", "--backend", "tensorrt", "--precision", "bf16"], "Error: vit has no bf16 tensorrt engine"),
        (["--name", "a/b"], "Error: model name 'a/b': expected letters, digits, '_', '.' and '-' (a directory name)"),
        (["--precision", "fp16"], "Error: --precision fp16: Triton's ONNX Runtime backend gets model.onnx (fp32) or "
                                  "the int8 graph (int8); other precisions need an engine"),
        (["--precision", "int8"], f"Error: vit has no int8 onnxruntime engine: make one with `vitdeploy build "
                                  f"{artifact_dir} --backend onnxruntime --precision int8 --calibration FOLDER`"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["triton", str(artifact_dir), "-o", str(repo), *args])
        assert result.exit_code == 1 and result.output.startswith(message) and result.output.count("\n") == 1, \
            result.output
    assert not repo.exists()
    write(str(artifact_dir), "-o", str(repo))
    result = CliRunner().invoke(main, ["triton", str(artifact_dir), "-o", str(repo)])
    assert result.output == f"Error: output directory {repo / 'vit'} already exists: pass --force to replace it\n"
    write(str(artifact_dir), "-o", str(repo), "--force")
    import vitdeploy.optional as optional

    monkeypatch.setattr(optional, "is_installed", lambda module: module != "tritonclient")
    result = CliRunner().invoke(main, ["triton", str(artifact_dir), "-o", str(tmp_path / "r2")])
    assert result.output == "Error: tritonclient is not installed: pip install 'vitdeploy[triton]'\n"
