"""`vitdeploy bench` with tiny iteration counts: what it reports and writes (never how fast anything is)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vitdeploy.artifact import load_artifact
from vitdeploy.bench import BenchOptions, BenchResult, Row, run_bench
from vitdeploy.tools.bench_report import check_publishable, format_table, write_markdown
from vitdeploy.tools.doctor import environment
from vitdeploy.tools.hardware import gpu_peak
from vitdeploy.cli.bench import bench
from vitdeploy.errors import VitdeployError

ROW_KEYS = ["backend", "precision", "batch", "height", "width", "median_ms", "p90_ms", "images_per_s", "speedup",
            "speedup_range", "max_abs", "min_cosine", "parity", "tflops", "peak_fraction", "other_load"]
CSV_KEYS = [key for key in ROW_KEYS if key != "speedup_range"] + ["speedup_min", "speedup_max"]


@pytest.fixture(scope="module")
def cli_run(vit_small_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One isolated CLI run on CPU at two batch sizes, with the ORT-optimised graph, writing JSON, CSV and a plot."""
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(bench, [
        str(vit_small_artifact), "--batch-sizes", "1,2", "--warmup", "1", "--iterations", "2", "--rounds", "2",
        "--threads", "1", "--max-load", "99",
        "--device", "cpu", "--ort-optimized", "--json", str(out / "bench.json"), "--csv", str(out / "bench.csv"),
        "--plot", str(out / "bench.png")])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_json_has_a_row_per_backend_and_batch(cli_run):
    out, _ = cli_run
    data = json.loads((out / "bench.json").read_text())
    assert data["artifact"] == "vit_small" and data["model"] == "vit_small_patch16_224"
    assert data["device"] == "cpu" and data["threads"] == 1 and data["peak"] is None
    assert data["options"]["batch_sizes"] == [1, 2] and data["options"]["iterations"] == 2
    assert data["options"]["rounds"] == 2 and data["options"]["isolated"] is True
    assert data["other_load_before"] >= 0 and data["load_problem"] is None  # measured; tolerated up to 99 CPUs
    assert 0.1 < data["gflops_per_image"]["64x64"] < 2  # vit_small at 64x64: 16 tokens, ~0.74 GFLOP
    assert [(r["backend"], r["batch"]) for r in data["rows"]] == [
        (backend, batch) for batch in (1, 2) for backend in ("torch", "onnxruntime", "onnxruntime-optimized")]
    for row in data["rows"]:
        assert list(row) == ROW_KEYS
        assert row["precision"] == "fp32" and (row["height"], row["width"]) == (64, 64)
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["images_per_s"] > 0 and row["tflops"] > 0
        assert row["parity"] is True and row["max_abs"] < 1e-4 and row["peak_fraction"] is None
        assert 0 <= row["other_load"] <= data["other_load_during"] <= data["cpu_count"]
        low, high = row["speedup_range"]
        if row["backend"] == "torch":
            assert row["speedup"] == low == high == 1.0 and row["max_abs"] == 0.0
        else:
            assert row["max_abs"] > 0  # really another runtime
            assert 0 < low <= row["speedup"] <= high  # the median of the two rounds' ratios
    # Which layer-norm fusion matches depends on the exporter's graph: torch 2.14's residual Adds give
    # SkipLayerNormalization, torch 2.11's plain LayerNormalization (with BiasGelu); parity is checked above.
    fused = data["notes"]["ort_optimizer_fused"]
    assert fused.get("SkipLayerNormalization", 0) + fused.get("LayerNormalization", 0) > 0, fused
    assert data["environment"] == environment().to_dict()  # vitdeploy doctor's facts, asked once per run
    assert [fact["name"] for fact in data["environment"]["runtimes"]][:3] == ["torch", "gpu", "onnxruntime"]


def test_csv_table_and_plot(cli_run):
    out, stdout = cli_run
    with open(out / "bench.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_KEYS and len(rows) == 6
    assert {float(r["speedup"]) for r in rows if r["backend"] == "torch"} == {1.0}
    lines = stdout.splitlines()
    assert lines[0].startswith("vit_small (vit_small_patch16_224) on cpu, 1 threads, each backend in a process of "
                               "its own, 2 rounds of 1 warmup + 2 timed calls per backend")
    assert lines[0].endswith("(--max-load 99)") and "LOADED" not in stdout
    assert lines[1].split()[:4] == ["backend", "prec", "batch", "size"] and lines[1].split()[-1] == "load"
    assert [line.split()[0] for line in lines[2:8]] == ["torch", "onnxruntime", "onnxruntime-optimized"] * 2
    assert lines[2].split()[7:9] == ["1.00x", "1.00-1.00"]
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out / 'bench.png'}" in lines


def test_autocast_row_is_compared_with_its_own_tolerance(vit_small_artifact: Path):
    options = BenchOptions(batch_sizes=(1,), warmup=1, iterations=1, rounds=1, autocast=("bf16",), device="cpu",
                           isolated=False)
    result = run_bench(load_artifact(vit_small_artifact), options, verbose=False)
    autocast = [row for row in result.rows if row.backend == "torch-autocast"]
    assert len(autocast) == 1 and autocast[0].precision == "bf16"
    assert 1e-4 < autocast[0].max_abs < load_artifact(vit_small_artifact).description.tolerance["bf16"].max_abs
    assert autocast[0].parity is True
    assert torch.get_num_threads() == result.threads  # no --threads: torch's own count, left as it was


@pytest.mark.parametrize(("options", "message"), [
    (BenchOptions(sizes=((64, 80),)), "--sizes: size 64x80 differs from the artifact's fixed size 64x64"),
    (BenchOptions(sizes=((64, 70),)), "--sizes: size 64x70 is not a multiple of 16 (the backbone's size rule)"),
    (BenchOptions(batch_sizes=(64,)), "--batch-sizes: batch 64 is outside the artifact's batch range 1..32"),
    (BenchOptions(iterations=0), "--warmup 5 --iterations 0 --rounds 3: expected all >= 1"),
    (BenchOptions(rounds=0), "--warmup 5 --iterations 10 --rounds 0: expected all >= 1"),
])
def test_bad_options_fail_before_measuring(vit_small_artifact: Path, options: BenchOptions, message: str):
    with pytest.raises(VitdeployError) as caught:
        run_bench(load_artifact(vit_small_artifact), options, verbose=False)
    assert str(caught.value) == message


def test_gpu_peak_table_matches_device_names():
    assert gpu_peak("NVIDIA H100 80GB HBM3")["entry"] == "H100"
    assert gpu_peak("NVIDIA H100 PCIe")["tflops"]["fp16"] == 756.0
    assert gpu_peak("NVIDIA H200")["entry"] == "H200"
    assert gpu_peak("NVIDIA A10")["entry"] == "A10" and gpu_peak("NVIDIA A100-SXM4-80GB")["entry"] == "A100"
    assert gpu_peak("NVIDIA L40S")["entry"] == "L40S" and gpu_peak("NVIDIA L4")["entry"] == "L4"
    assert gpu_peak("Some Future GPU") is None


def test_gpu_table_shows_percent_of_peak():
    peak = gpu_peak("NVIDIA H100 80GB HBM3")
    row = Row(backend="tensorrt", precision="fp16", batch=8, height=224, width=224, median_ms=2.0, p90_ms=2.1,
              images_per_s=4000.0, speedup=5.0, speedup_range=(4.9, 5.1), max_abs=0.01, min_cosine=0.9999,
              parity=True, tflops=140.0,
              peak_fraction=140.0 / peak["tflops"]["fp16"])
    result = BenchResult(artifact="vit_base", model="vit_base_patch16_224", device="NVIDIA H100 80GB HBM3",
                         threads=8, options=BenchOptions(device="cuda"), gflops_per_image={"224x224": 35.1},
                         peak=peak, load_average=0.0, cpu_count=16, other_load_before=0.0, rows=[row])
    lines = format_table(result).splitlines()
    assert lines[1].split()[-1] == "%peak" and lines[2].split()[-1] == "14.1"
    assert lines[3].startswith("peak TFLOP/s of H100 (NVIDIA datasheet, dense): fp32 67, tf32 494.7, fp16 989.4")


def test_a_recipe_is_exported_to_a_temporary_directory_and_timed():
    recipe = str(Path(__file__).parent / "recipes" / "vit_tiny_dynamic.toml")
    result = CliRunner().invoke(bench, [recipe, "--batch-sizes", "1", "--warmup", "1", "--iterations", "1",
                                        "--rounds", "1", "--threads", "1", "--device", "cpu", "--in-process"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vit_tiny_dynamic (vit_tiny_patch16_224) on cpu, 1 threads")
    assert [line.split()[:4] for line in lines[2:4]] == [["torch", "fp32", "1", "64x64"],
                                                         ["onnxruntime", "fp32", "1", "64x64"]]
    assert "exporting ONNX" in result.stderr


def test_unknown_target_is_one_line():
    from vitdeploy.cli import main

    result = CliRunner().invoke(main, ["bench", "no_such_recipe"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown recipe 'no_such_recipe': expected one of ")
    assert len(result.output.splitlines()) == 1


def test_simple_feature_pyramid_artifact_is_compared_level_by_level(vit_tiny_sfp_artifact: Path):
    """The eager reference runs the artifact's own pyramid (strides 4..32 from ViT blocks)."""
    result = CliRunner().invoke(bench, [str(vit_tiny_sfp_artifact), "--batch-sizes", "1", "--warmup", "1",
                                        "--iterations", "1", "--rounds", "1", "--threads", "1", "--device", "cpu",
                                        "--ort-optimized", "--no-engines", "--in-process"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[2:5]]
    assert [row[0] for row in rows] == ["torch", "onnxruntime", "onnxruntime-optimized"]
    assert all(row[-3] == "ok" for row in rows)  # parity: same levels, same shapes


def test_torch_peers_are_rows_with_their_own_precision(vit_tiny_dynamic_artifact: Path):
    """torch.compile + autocast bf16 and torchao int8, timed beside eager on the same batch."""
    options = BenchOptions(batch_sizes=(1,), warmup=1, iterations=1, rounds=1, compile=("bf16",), torchao=True,
                           onnxruntime=False, engines=False, device="cpu", isolated=False, threads=1)
    result = run_bench(load_artifact(vit_tiny_dynamic_artifact), options, verbose=False)
    rows = {(row.backend, row.precision): row for row in result.rows}
    assert list(rows) == [("torch", "fp32"), ("torch-compile", "bf16"), ("torchao", "int8")], result.skipped
    assert rows[("torch-compile", "bf16")].max_abs > 0 and rows[("torch-compile", "bf16")].parity is True
    assert 0.99 < rows[("torchao", "int8")].min_cosine < 1  # really quantised, still close


def test_a_loaded_machine_is_flagged(vit_tiny_dynamic_artifact: Path):
    """A busy loop in another process is load the bench sees, before and during the timed calls."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = CliRunner().invoke(bench, [str(vit_tiny_dynamic_artifact), "--batch-sizes", "1", "--warmup", "1",
                                            "--iterations", "20", "--rounds", "1", "--threads", "1", "--device",
                                            "cpu", "--no-engines", "--max-load", "0.5", "--in-process"])
    finally:
        burner.kill()
        burner.wait()
    assert result.exit_code == 0, result.output
    assert "LOADED: other processes kept " in result.stdout and "(--max-load 0.5)" in result.stdout
    assert any(line.split()[-1].endswith("!") for line in result.stdout.splitlines()[2:4])


def test_publish_needs_an_isolated_run(vit_small_artifact: Path, tmp_path: Path):
    from vitdeploy.cli import main

    result = CliRunner().invoke(main, ["bench", str(vit_small_artifact), "--in-process", "--publish",
                                       str(tmp_path / "t.md")])
    assert result.exit_code == 1 and result.output.startswith("Error: --publish with --in-process: expected an "
                                                              "isolated run")


def test_a_quiet_isolated_run_is_publishable_as_markdown(tmp_path: Path):
    row = Row(backend="openvino", precision="bf16", batch=8, height=224, width=224, median_ms=229.0, p90_ms=231.0,
              images_per_s=34.9, speedup=3.8, speedup_range=(3.7, 3.9), max_abs=0.02, min_cosine=0.99991,
              parity=True, tflops=1.2, peak_fraction=None, other_load=0.01)
    result = BenchResult(artifact="vit_base", model="vit_base_patch16_224", device="cpu", threads=2,
                         options=BenchOptions(), gflops_per_image={"224x224": 35.1}, peak=None, load_average=0.1,
                         cpu_count=2, other_load_before=0.02, rows=[row])
    check_publishable(result)
    write_markdown(result, tmp_path / "t.md")
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert "each backend in a process of its own" in lines[0] and "0.02 CPUs before, up to 0.01 during" in lines[0]
    assert lines[4] == "| openvino | bf16 | 8 | 224x224 | 229.0 | 34.9 | 3.80x (3.70-3.90) | 0.999910 | ok |"
    loaded = BenchResult(**{**result.__dict__, "other_load_before": 0.5})
    with pytest.raises(VitdeployError, match="other processes kept 0.50 CPUs busy before the run"):
        check_publishable(loaded)


def test_precision_keeps_only_that_precisions_engines(aoti_engine: Path):
    """`--precision int8` times int8 engines only: the fp32 AOTInductor package and ONNX Runtime's fp32 graph drop."""
    from vitdeploy.runners.candidates import engine_specs

    artifact = load_artifact(aoti_engine.parent)
    assert [spec.path for spec in engine_specs(artifact, "cpu", ("fp32",))[0]] == [aoti_engine]
    assert engine_specs(artifact, "cpu", ("int8",))[0] == []
    options = BenchOptions(batch_sizes=(1,), warmup=1, iterations=1, rounds=1, device="cpu", isolated=False,
                           precisions=("int8",))
    result = run_bench(artifact, options, verbose=False)
    assert [row.backend for row in result.rows] == ["torch"]  # the reference, always
