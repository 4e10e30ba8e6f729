import json
from pathlib import Path

from vitdeploy.artifact import load_artifact
from vitdeploy.verify import verification_sizes, verify_onnx


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


def test_vit_embedding_is_verified_too(vit_small_artifact: Path):
    report = verify_onnx(load_artifact(vit_small_artifact), batch_sizes=[3])
    assert report.passed and report.checks[-1].output == "embedding" and report.checks[-1].shape == [3, 384]


def test_a_tight_tolerance_fails_the_check(vit_small_artifact: Path):
    artifact = load_artifact(vit_small_artifact)
    meta = json.loads(json.dumps(artifact.meta))
    meta["tolerance"]["fp32"]["max_abs"] = 1e-12
    report = verify_onnx(type(artifact)(artifact.onnx_path, meta, None), batch_sizes=[1])
    assert not report.passed and not any(c.passed for c in report.checks)


def test_dynamic_sizes_cover_range_corners():
    spec = {"mode": "dynamic", "opt_hw": [224, 224], "min_hw": [128, 160], "max_hw": [512, 448]}
    assert verification_sizes(spec) == [(224, 224), (128, 160), (512, 448), (128, 448), (512, 160)]
