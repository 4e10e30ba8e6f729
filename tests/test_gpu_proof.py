"""`vitdeploy gpu-proof` on a CPU: its refusal without a GPU, and a dry run's record (JSON and markdown).

The dry run is the real command on a 2-block ViT: export, a TensorRT-RTX build whose load is refused
(no GPU), eager fp32 / autocast / ONNX Runtime timings with 1 round, and torch.compile skipped by the
budget (its estimate is larger than the budget given), so the record has every kind of row.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import RECIPES, requires
from vitdeploy.cli import main
from vitdeploy.errors import VitdeployError
from vitdeploy.tools.gpu_proof import ESTIMATE_S, RESERVE_S, Proof, ProofOptions, _pytest
from vitdeploy.tools.gpu_proof_report import render_markdown
from vitdeploy.tools.hardware import no_gpu_reason
from vitdeploy.progress import Progress

BUDGET_S = 120  # fits export, TensorRT-RTX and the baselines of a tiny model; not AOTInductor's or torch.compile's estimate
RUNNERS = ["torch", "torch-autocast", "torch-autocast", "torch-compile", "onnxruntime", "tensorrt_rtx", "aoti"]
SECTIONS = ["# GPU proof: no GPU: a dry run on the CPU (--device cpu), ", "## Machine",
            "## Runtimes (`vitdeploy doctor`)", "## Benchmarks", "### vit_tiny_dynamic (vit_tiny_patch16_224), 64x64: ",
            "## TensorRT-RTX", "## pytest -m gpu", "## Steps"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    assert min(ESTIMATE_S["compile"], ESTIMATE_S["aoti"]) > BUDGET_S - RESERVE_S
    out = tmp_path_factory.mktemp("proof")
    recipe = str(RECIPES / "vit_tiny_dynamic.toml")
    result = CliRunner().invoke(main, ["gpu-proof", "--device", "cpu", "--recipes", recipe, "--batch-sizes", "1",
                                       "--skip-pytest", "--output-dir", str(out), "--budget-s", str(BUDGET_S)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "gpu_proof.json").read_text()), (out / "gpu_proof.md").read_text(), result.stdout


@NO_GPU
def test_refuses_without_a_gpu_and_says_what_it_found() -> None:
    result = CliRunner().invoke(main, ["gpu-proof", "--output-dir", "unused"])
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    assert result.exit_code == 1 and result.output == (
        f"Error: gpu-proof needs a CUDA GPU that torch can use: torch {torch.__version__} is {build} and sees 0 GPUs "
        f"({no_gpu_reason()}); run it on a GPU machine, or pass --device cpu for a dry run\n")
    assert not Path("unused").exists()


def test_a_dry_run_needs_its_own_output_dir() -> None:
    result = CliRunner().invoke(main, ["gpu-proof", "--device", "cpu"])
    assert result.exit_code == 1 and result.output == (
        "Error: --device cpu is a dry run: give --output-dir, so it does not replace docs/gpu_proof/gpu_proof.md\n")


def test_dry_run_record(dry_run: tuple[dict, str, str]) -> None:
    data, _, stdout = dry_run
    assert data["finished"] is True and data["device"] == "cpu" and data["machine"]["gpu"] is None
    assert [fact["name"] for fact in data["environment"]["runtimes"]][:2] == ["torch", "gpu"]
    steps = {step["step"]: step for step in data["steps"]}
    assert list(steps) == ["export vit_tiny_dynamic", "tensorrt_rtx vit_tiny_dynamic", "baselines vit_tiny_dynamic",
                           "pytest -m gpu", "aoti vit_tiny_dynamic", "torch.compile vit_tiny_dynamic"]
    assert [step["status"] for step in steps.values()] == ["ok", "ok", "ok", "skipped", "skipped", "skipped"]
    assert steps["aoti vit_tiny_dynamic"]["detail"].endswith(f"this step takes about {ESTIMATE_S['aoti']} s here")
    assert steps["pytest -m gpu"]["detail"] == "not asked for (--skip-pytest)"
    assert steps["torch.compile vit_tiny_dynamic"]["detail"].startswith("budget: ")
    assert steps["torch.compile vit_tiny_dynamic"]["detail"].endswith(f" s left, this step takes about "
                                                                     f"{ESTIMATE_S['compile']} s here")
    baselines = data["bench"]["vit_tiny_dynamic"]["baselines"]
    assert [(row["backend"], row["precision"]) for row in baselines["rows"]] == [
        ("torch", "fp32"), ("torch-autocast", "bf16"), ("torch-autocast", "fp16"), ("onnxruntime", "fp32")]
    assert "environment" not in baselines  # recorded once, at the top
    assert stdout.splitlines()[-1].startswith("wrote ")


@requires("tensorrt_rtx")
@NO_GPU
def test_dry_run_records_the_tensorrt_rtx_attempt(dry_run: tuple[dict, str, str]) -> None:
    data, _, _ = dry_run
    attempt = data["tensorrt_rtx"]["vit_tiny_dynamic"]
    assert list(attempt) == ["auto", "support_matrix", "build_target_gpu", "build_portable", "load",
                             "tensorrt_rtx_itself"]
    assert attempt["auto"] == {"ok": True, "text": "chooses tensorrt_rtx"}
    assert attempt["build_target_gpu"]["text"].startswith("no CUDA GPU found, but --target-gpu was given")
    assert attempt["build_portable"] == {"ok": True, "text": "model.tensorrt_rtx.fp32.engine"}
    assert attempt["load"]["ok"] is False and attempt["load"]["text"].startswith("no CUDA GPU found")
    assert attempt["tensorrt_rtx_itself"]["ok"] is False  # TensorRT-RTX agrees: it cannot deserialise here
    skipped = data["bench"]["vit_tiny_dynamic"]["baselines"]["skipped"]
    assert skipped == {"model.tensorrt_rtx.fp32.engine": "tensorrt_rtx engines run on a GPU (--device cuda)"}


def test_dry_run_markdown(dry_run: tuple[dict, str, str]) -> None:
    data, markdown, _ = dry_run
    assert markdown == render_markdown(data)
    lines = markdown.splitlines()
    positions = [next(i for i, line in enumerate(lines) if line.startswith(section)) for section in SECTIONS]
    assert positions == sorted(positions)
    table = lines[lines.index(next(line for line in lines if line.startswith("| runner |"))) + 2:][:len(RUNNERS)]
    assert [row.split(" | ")[0].lstrip("| ") for row in table] == RUNNERS  # one row per runner, measured or not
    assert table[0].split(" | ")[1:3] == ["fp32", "1"] and table[0].split(" | ")[6] == "1.00x (1.00-1.00)"
    assert table[3].startswith("| torch-compile | fp32 | 1 | not measured (a) |")
    assert f"(a) skipped: {data['steps'][-1]['detail']}  " in lines
    assert "Not run: not asked for (--skip-pytest)." in lines


def test_a_record_cut_short_says_so(dry_run: tuple[dict, str, str]) -> None:
    """The record is written after every step: one stopped after its export still reads."""
    data, _, _ = dry_run
    partial = {**data, "finished": False, "steps": data["steps"][:1], "bench": {}, "tensorrt_rtx": {},
               "pytest": None}
    markdown = render_markdown(partial)
    assert "stopped before the end (partial record)" in markdown.splitlines()[2]
    assert markdown.count("not measured (a)") == len(RUNNERS)
    assert "(a) not reached (the run stopped before this step)  " in markdown.splitlines()
    assert "Not run: the run stopped before it." in markdown.splitlines()


def test_pytest_step_is_capped_by_the_budget(tmp_path: Path) -> None:
    proof = Proof(ProofOptions(output_dir=tmp_path, budget_s=RESERVE_S + 1, device="cpu"), "test", Progress(0, False))
    started = time.monotonic()
    with pytest.raises(VitdeployError, match="pytest -m gpu: timed out after 1 s"):
        _pytest(proof)
    assert time.monotonic() - started < 30 and proof.data["pytest"]["cap_s"] == 1
