"""`vitdeploy doctor`: the lines this machine gets (exact where they are deterministic here) and the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import requires
from vitdeploy.cli import main
from vitdeploy.tools.doctor import CPP_BUILD, Environment, cpp_demo_fact, probe, tensorrt_rtx_fact
from vitdeploy.engine.tensorrt import rtx_unsupported
from vitdeploy.tools.hardware import compute_capability
from vitdeploy.optional import is_installed, require

NAMES = ["torch", "gpu", "onnxruntime", "tensorrt", "tensorrt_rtx", "openvino", "cpp_demo"]
FIELDS = ["name", "available", "version", "detail", "why_not", "extra"]
NO_GPU = pytest.mark.skipif(compute_capability() is not None, reason="asserts this CPU machine's lines")


def _doctor(*args: str) -> str:
    result = CliRunner().invoke(main, ["doctor", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@NO_GPU
def test_one_line_per_runtime_on_this_machine(tmp_path: Path) -> None:
    lines = _doctor("--cpp-demo", str(tmp_path / "vitdeploy_demo")).splitlines()
    assert lines[0].startswith("vitdeploy 0.1.0, python ") and lines[0].endswith(" CPUs")
    assert [line.split()[0] for line in lines[1:]] == NAMES
    torch_line, gpu, ort, trt, rtx, openvino, demo = lines[1:]
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    assert torch_line.startswith(f"torch          {torch.__version__:<13} {build}, runs on the CPU; ")
    assert gpu.startswith("gpu            -             missing: no CUDA GPU found (")
    assert ort.startswith(f"onnxruntime    {require('onnxruntime').__version__:<13} providers ")
    if "CUDAExecutionProvider" not in require("onnxruntime").get_available_providers():
        assert ort.endswith("CPUExecutionProvider; CUDA: this onnxruntime has no CUDA provider "
                            "(pip install 'vitdeploy[ort-gpu]')")
    if not is_installed("tensorrt"):
        assert trt == "tensorrt       -             missing: not installed: pip install 'vitdeploy[trt]'"
    if is_installed("tensorrt_rtx"):
        assert rtx == (f"tensorrt_rtx   {require('tensorrt_rtx').__version__:<13} builds engines here (no GPU needed); "
                       "runs them on RTX GPUs 7.5, 8.6, 8.9, 12.0, 12.1; no GPU here")
    if is_installed("openvino"):
        assert openvino.split()[2:4] == ["ok:", "devices"] and "CPU" in openvino
    assert demo == f"cpp_demo       -             missing: not built: no {tmp_path / 'vitdeploy_demo'} ({CPP_BUILD})"


def test_json_for_scripts(tmp_path: Path) -> None:
    data = json.loads(_doctor("--json", "--cpp-demo", str(tmp_path / "none")))
    assert list(data) == ["vitdeploy", "python", "platform", "cpu_count", "runtimes"]
    assert [fact["name"] for fact in data["runtimes"]] == NAMES
    assert all(list(fact) == FIELDS for fact in data["runtimes"])
    facts = {fact["name"]: fact for fact in data["runtimes"]}
    assert facts["torch"]["available"] is True and facts["torch"]["version"] == torch.__version__
    assert facts["gpu"]["available"] is (compute_capability() is not None)
    assert facts["cpp_demo"] == {"name": "cpp_demo", "available": False, "version": None, "detail": "",
                                 "why_not": f"not built: no {tmp_path / 'none'} ({CPP_BUILD})", "extra": None}
    for name, extra in (("onnxruntime", "ort"), ("tensorrt", "trt"), ("tensorrt_rtx", "trt-rtx"),
                        ("openvino", "openvino")):
        assert facts[name]["available"] is is_installed(name)
        if not is_installed(name):
            assert facts[name]["extra"] == extra and facts[name]["why_not"].endswith(f"[{extra}]'")
    assert Environment.from_dict(data) == probe(tmp_path / "none")  # what reports store reads back


@requires("tensorrt_rtx")
def test_tensorrt_rtx_line_follows_the_support_matrix() -> None:
    """The GPUs are passed in: an H200 is told why TensorRT-RTX will not run there and what to use instead."""
    h200 = tensorrt_rtx_fact((9, 0))
    assert h200.available and h200.why_not == rtx_unsupported((9, 0))
    assert "use full TensorRT (pip install 'vitdeploy[trt]'" in h200.line()
    turing = tensorrt_rtx_fact((7, 5))
    assert turing.why_not == "portable engines do not run on 7.5: build with `vitdeploy build --target-gpu`"
    assert tensorrt_rtx_fact((8, 9)).line().split()[2] == "ok:"


def test_a_demo_that_does_not_run_is_said(tmp_path: Path) -> None:
    demo = tmp_path / "vitdeploy_demo"
    demo.write_text("not a program")
    fact = cpp_demo_fact(demo)
    assert not fact.available and fact.why_not.startswith(f"{demo} does not run: ")
