"""On a CUDA GPU with torch alone (the machine `vitdeploy gpu-proof` is made for): the eager reference on
the GPU, bench's % of peak, ONNX Runtime's CUDA provider when present, doctor's GPU line, and that
`vitdeploy.load(backend="auto")` never picks a TensorRT-RTX engine on a GPU it does not support.
Marked `gpu`; skipped where torch sees no GPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vitdeploy
from vitdeploy.artifact import load_artifact
from vitdeploy.bench import BenchOptions, run_bench
from vitdeploy.tools.doctor import probe
from vitdeploy.engine import build as build_engine
from vitdeploy.engine.tensorrt import RTX_SUPPORTED
from vitdeploy.tools.hardware import compute_capability, format_capability, gpu_peak
from vitdeploy.optional import is_installed
from vitdeploy.runners import onnxruntime_problem
from vitdeploy.runners.torch import TorchRunner
from vitdeploy.verify import compare_runners, verify_onnx

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")]


def test_eager_reference_on_the_gpu_matches_the_cpu(vit_tiny_dynamic_artifact: Path) -> None:
    """The pyramid code runs on CUDA as on the CPU (cuDNN may compute the patch convolution in TF32, so the
    fp16 tolerance applies)."""
    artifact = load_artifact(vit_tiny_dynamic_artifact)
    report = compare_runners(artifact.description, vit_tiny_dynamic_artifact,
                             TorchRunner(artifact.description, device="cuda", name="torch-cuda"), "eager torch on CUDA",
                             batch_sizes=[1, 4])
    tolerance = artifact.description.tolerance["fp16"]
    assert report.checks and all(c.max_abs <= tolerance.max_abs and c.min_cosine >= tolerance.min_cosine
                                 for c in report.checks)


def test_bench_on_the_gpu_reports_percent_of_peak(vit_tiny_dynamic_artifact: Path) -> None:
    options = BenchOptions(batch_sizes=(1, 4), warmup=2, iterations=3, rounds=1, device="cuda", autocast=("bf16",),
                           engines=False)
    result = run_bench(load_artifact(vit_tiny_dynamic_artifact), options, verbose=False)
    assert result.device == torch.cuda.get_device_name() and result.peak == gpu_peak(result.device)
    assert [(row.backend, row.precision) for row in result.rows if row.batch == 1][:2] == [
        ("torch", "fp32"), ("torch-autocast", "bf16")]
    for row in result.rows:
        assert row.parity is True and row.median_ms > 0 and row.tflops > 0
    eager = [row for row in result.rows if row.backend == "torch"]
    assert all((row.peak_fraction is not None) == (result.peak is not None) for row in eager)  # every entry has fp32
    assert result.environment["runtimes"][1]["available"] is True  # the gpu fact


@pytest.mark.skipif(onnxruntime_problem(cuda=True) is not None, reason="needs onnxruntime-gpu (its CUDA provider)")
def test_onnxruntime_cuda_matches_eager(vit_tiny_dynamic_artifact: Path) -> None:
    report = verify_onnx(load_artifact(vit_tiny_dynamic_artifact), cuda=True, batch_sizes=[1, 2])
    assert report.passed, report.table()


def test_doctor_names_this_gpu() -> None:
    environment = probe()
    gpu = environment.fact("gpu")
    capability = format_capability(compute_capability())
    assert gpu.available and gpu.version == capability
    assert gpu.detail.startswith(f"{torch.cuda.get_device_name()}, compute capability {capability}, ")
    assert environment.fact("torch").why_not is None


@pytest.mark.skipif(not is_installed("tensorrt_rtx") or compute_capability() in RTX_SUPPORTED,
                    reason="needs tensorrt_rtx and a GPU that TensorRT-RTX does not support (A100, H100, H200)")
def test_auto_skips_a_tensorrt_rtx_engine_this_gpu_cannot_run(vit_tiny_dynamic_artifact: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    shutil.copytree(vit_tiny_dynamic_artifact, artifact)
    build_engine(artifact, "tensorrt_rtx")  # portable: builds without using the GPU
    with vitdeploy.load(artifact) as model:
        assert model.backend != "tensorrt"
        assert model.infer(np.zeros((1, 3, 64, 64), np.float32))["block1"].shape == (1, 192, 4, 4)
