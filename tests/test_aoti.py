"""AOTInductor engines: `vitdeploy build --backend aoti` on a real (2-block) ViT, loaded, verified and timed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vitdeploy
from vitdeploy.artifact import load_artifact
from vitdeploy.bench import BenchOptions, run_bench
from vitdeploy.cli import main
from vitdeploy.engine import Engine, engine_profile, read_engine_description
from vitdeploy.engine.aoti import cpu_capability
from vitdeploy.errors import VitdeployError
from vitdeploy.tools.hardware import gpu_present
from vitdeploy.integrity import sha256_file
from vitdeploy.runners import AUTO, engine_problem
from vitdeploy.runners.aoti import ALIGNMENT, data_address, extract_library, realign_constants
from vitdeploy.verify import verify_engine


def test_description_records_what_the_package_needs(aoti_engine: Path):
    description = read_engine_description(aoti_engine)
    engine = description.engine
    assert aoti_engine.name == "model.aoti.fp32.pt2" and engine.file == aoti_engine.name
    assert (engine.backend, engine.precision, engine.device) == ("aoti", "fp32", "cpu")
    assert engine.backend_version == torch.__version__.split("+")[0] and engine.cpu_capability == cpu_capability()
    assert engine.files[aoti_engine.name].sha256 == sha256_file(aoti_engine)
    assert engine.profile == engine_profile(description.input)  # batch 1..32 and the artifact's size range
    assert engine.io["image"].shape == (-1, 3, -1, -1) and engine.io["block0"].shape == (-1, 192, -1, -1)


def test_load_runs_dynamic_sizes_and_auto_puts_a_cpu_package_after_openvino(aoti_engine: Path):
    with vitdeploy.load(aoti_engine.parent, backend="aoti") as model:
        pyramid = model.infer(np.random.default_rng(0).random((3, 3, 64, 96), dtype=np.float32))
        assert model.backend == "aoti_cpu" and {k: v.shape for k, v in pyramid.items()} == {
            "block0": (3, 192, 4, 6), "block1": (3, 192, 4, 6)}
    if not gpu_present():  # on the CPU, measured: an AOTInductor package's fp32 ahead of ONNX Runtime's
        with vitdeploy.load(aoti_engine.parent) as model:
            assert model.backend == "aoti_cpu"
        assert AUTO.index("openvino") < AUTO.index("aoti_cpu") < AUTO.index("onnxruntime_cpu")
        with pytest.raises(VitdeployError, match="no fp32 or fp16 aoti_cuda engine in the artifact"):
            vitdeploy.load(aoti_engine.parent, backend="aoti_cuda")


def test_a_cpu_runner_reads_aligned_weights_and_matches_torchs_loader(aoti_engine: Path, tmp_path: Path):
    runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(extract_library(aoti_engine, tmp_path)), 1)
    weights = realign_constants(runner)
    constants = runner.extract_constants_map(False)
    assert constants and all(data_address(tensor) % ALIGNMENT == 0 for tensor in constants.values())
    image = torch.rand(2, 3, 64, 96)
    expected = torch._inductor.aoti_load_package(str(aoti_engine))(image)
    assert all(torch.equal(got, want) for got, want in zip(runner.run([image]), expected, strict=True))
    del runner, weights


def test_verify_passes_at_fp32_tolerance(aoti_engine: Path):
    report = verify_engine(Engine.at(aoti_engine), [1, 2])
    assert report.passed and report.precision == "fp32" and len(report.checks) == 20  # 5 sizes x 2 batches x 2


def test_bench_times_it_as_an_engine_row(aoti_engine: Path):
    options = BenchOptions(batch_sizes=(2,), warmup=1, iterations=1, rounds=1, onnxruntime=False, device="cpu",
                           isolated=False, threads=1)
    result = run_bench(load_artifact(aoti_engine.parent), options, verbose=False)
    assert [(row.backend, row.precision, row.parity) for row in result.rows] == [("torch", "fp32", True),
                                                                                  ("aoti", "fp32", True)]


def test_a_package_from_another_torch_or_altered_is_refused(aoti_engine: Path, tmp_path: Path):
    directory = tmp_path / "copy"
    shutil.copytree(aoti_engine.parent, directory)
    engine = directory / aoti_engine.name
    described = json.loads(Path(f"{engine}.json").read_text())
    described["engine"]["backend_version"] = "2.0.0"
    Path(f"{engine}.json").write_text(json.dumps(described))
    artifact = load_artifact(directory)
    assert engine_problem(artifact, Engine.at(engine)).startswith(
        f"engine was compiled by torch 2.0.0 but torch {torch.__version__.split('+')[0]} is installed: an "
        "AOTInductor package loads on the torch release that built it")
    result = CliRunner().invoke(main, ["bench", str(directory), "--in-process", "--batch-sizes", "1",
                                       "--iterations", "1", "--rounds", "1", "--warmup", "1"])
    assert f"skipped {engine.name}: engine was compiled by torch 2.0.0" in result.output
    described["engine"]["backend_version"] = torch.__version__.split("+")[0]
    Path(f"{engine}.json").write_text(json.dumps(described))
    with open(engine, "r+b") as handle:  # same size, other bytes
        handle.seek(1000)
        handle.write(b"\0" * 16)
    with pytest.raises(VitdeployError, match="sha256"):
        vitdeploy.load(directory, backend="aoti")


def test_build_refuses_int8_in_one_line(vit_tiny_dynamic_artifact: Path):
    result = CliRunner().invoke(main, ["build", str(vit_tiny_dynamic_artifact), "--backend", "aoti",
                                       "--precision", "int8"])
    assert result.exit_code == 1 and result.output == ("Error: AOTInductor cannot build precision 'int8': expected "
                                                       "one of fp32, bf16\n")
