import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conftest import RECIPES
from vitdeploy.artifact import Artifact, load_artifact
from vitdeploy.cli import main
from vitdeploy.description import Tolerance
from vitdeploy.tools.doctor import environment
from vitdeploy.parity import VerifyReport, scaled_tolerance, verification_sizes
from vitdeploy.verify import verify_onnx


def test_hiera_parity_per_output(hiera_tiny_artifact: Path):
    report = verify_onnx(load_artifact(hiera_tiny_artifact), batch_sizes=[1, 2])
    assert report.passed
    assert [(c.input_shape[0], c.output) for c in report.checks] == \
        [(b, name) for b in (1, 2) for name in ("stride4", "stride8", "stride16", "stride32")]
    for check in report.checks:
        assert check.shape == check.expected_shape
        assert 0 < check.max_abs < 1e-4 and check.min_cosine > 0.99999 and check.nonfinite == 0
    saved = json.loads((hiera_tiny_artifact / "verify_report.json").read_text())
    assert saved["passed"] is True and len(saved["checks"]) == 8
    assert saved["environment"] == environment().to_dict()  # the same facts as `vitdeploy doctor --json`


def test_vit_embedding_is_verified_too(vit_small_artifact: Path):
    report = verify_onnx(load_artifact(vit_small_artifact), batch_sizes=[3])
    assert report.passed and report.checks[-1].output == "embedding" and report.checks[-1].shape == [3, 384]


def test_a_tight_tolerance_fails_the_check(vit_small_artifact: Path):
    artifact = load_artifact(vit_small_artifact)
    tight = replace(artifact.description, tolerance={**artifact.description.tolerance, "fp32": Tolerance(1e-12, 0.99999)})
    report = verify_onnx(Artifact(artifact.onnx_path, tight, None), batch_sizes=[1])  # None: no report written
    assert not report.passed and not any(c.passed for c in report.checks)
    assert all(0 < c.max_abs < 1 for c in report.checks)  # a failed check reports its error (polygraphy's is falsy)


def test_the_absolute_bound_scales_with_outputs_above_one():
    """inception_v3 with random weights: stride32 outputs near 3e10 matched to rel_l2 1.6e-6 failed 1e-4 absolute."""
    fp32 = Tolerance(1e-4, 0.99999)
    assert scaled_tolerance(fp32, np.array([0.5, -0.9])) == fp32
    assert scaled_tolerance(fp32, np.array([3.0, -2e4])).max_abs == 2.0
    assert scaled_tolerance(Tolerance(None, 0.99, 0.15), np.array([1e6])).max_abs is None


def test_dynamic_sizes_cover_range_corners(vit_tiny_dynamic_artifact: Path):
    spec = replace(load_artifact(vit_tiny_dynamic_artifact).input, opt_hw=(224, 224), min_hw=(128, 160),
                   max_hw=(512, 448))
    assert verification_sizes(spec) == [(224, 224), (128, 160), (512, 448), (128, 448), (512, 160)]


def test_batch_sizes_outside_the_range_are_one_line(vit_tiny_dynamic_artifact: Path):
    """An artifact of batch 1..4: asking for 8 was a polygraphy UnboundLocalError traceback."""
    result = CliRunner().invoke(main, ["verify", str(vit_tiny_dynamic_artifact), "--batch-sizes", "2,8"])
    assert result.exit_code == 1
    assert result.output == ("Error: batch 8 is outside the artifact's batch range 1..4: expected batch sizes "
                             "within it\n")


def test_a_report_without_checks_never_passes():
    assert not VerifyReport(artifact="a", candidate="c", precision="fp32", seed=0, checks=[]).passed


def test_nonfinite_weights_warn_at_export_and_fail_verify_with_nan_cosine(tmp_path: Path):
    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64).state_dict()
    state["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    checkpoint = tmp_path / "diverged.safetensors"
    save_file(state, str(checkpoint))
    result = CliRunner().invoke(main, ["export", str(RECIPES / "vit_tiny_dynamic.toml"), "--fixed", "--checkpoint",
                                       str(checkpoint), "-o", str(tmp_path / "art")])
    assert result.exit_code == 0, result.output
    assert (f"Warning: 1 weight tensors of vit_tiny_patch16_224 hold NaN or infinite values (e.g. "
            f"blocks.1.mlp.fc1.weight) in checkpoint {checkpoint}: the exported outputs will not be finite and "
            "verify will fail") in result.stderr.splitlines()
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "art"), "--batch-sizes", "1"])
    assert result.exit_code == 1
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [(row[1], row[5], row[-1]) for row in rows] == [("block0", "1.0000000", "pass"), ("block1", "nan", "FAIL")]
    saved = json.loads((tmp_path / "art" / "verify_report.json").read_text())
    assert saved["passed"] is False and saved["checks"][1]["min_cosine"] is None
    assert saved["checks"][1]["nonfinite"] > 0
